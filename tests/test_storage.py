"""gs:// workdirs and data, against a real GCS emulator on 127.0.0.1.

The `gcs` fixture (tests/conftest.py) runs fake-gcs-server; bert_jax
reaches it through STORAGE_EMULATOR_HOST, the variable Google's client
libraries read, and nothing else.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax import pretrained
from bert_jax import storage
from tests import test_train


def _read_local_tree(root):
  out = {}
  for d, _, files in os.walk(root):
    for name in files:
      path = os.path.join(d, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_cached_copy_downloads_once_and_follows_changes(gcs, tmp_path):
  src = tmp_path / "src"
  (src / "sub").mkdir(parents=True)
  (src / "a.bin").write_bytes(os.urandom(3000))
  (src / "sub" / "b.txt").write_text("b")
  url = f"gs://{gcs.bucket}/cache_test"
  storage.upload_tree(str(src), url)
  assert storage.exists(f"{url}/sub/b.txt")
  assert storage.read_text(f"{url}/sub/b.txt") == "b"
  cache = str(tmp_path / "cache")
  local = storage.cached_copy(url, cache)
  got = _read_local_tree(local)
  assert got.pop(".bert_jax_cache.json")
  assert got == _read_local_tree(str(src))
  # Unchanged objects are not fetched again (the file keeps its inode).
  inode = os.stat(os.path.join(local, "a.bin")).st_ino
  storage.cached_copy(url, cache)
  assert os.stat(os.path.join(local, "a.bin")).st_ino == inode
  # A rewritten object is; a deleted one leaves the cache.
  storage.write_text(f"{url}/a.bin", "new")
  storage.remove(f"{url}/sub/b.txt")
  storage.cached_copy(url, cache)
  assert open(os.path.join(local, "a.bin")).read() == "new"
  assert not os.path.exists(os.path.join(local, "sub", "b.txt"))


def _run(workdir, data_dir, env, *extra, wait=True):
  args = [sys.executable, "-m", "bert_jax.main",
          "--config=configs/pretrain.py:demo", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          f"--config.data.vocab_file={test_train.VOCAB}",
          "--config.train_batch_size=16", "--config.eval_batch_size=16",
          "--config.phase2_train_batch_size=16",
          "--config.max_seq_length=32", "--config.max_predictions_per_seq=5",
          "--config.num_train_steps=6", "--config.num_warmup_steps=2",
          "--config.log_every_steps=1", "--config.save_checkpoints_steps=2",
          "--config.num_eval_steps=1", *extra]
  proc = subprocess.Popen(args, cwd=test_train.ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  return out


def _steps_committed(url):
  """Checkpoint steps Orbax finished writing (commit_success.txt) in url."""
  fs = storage.filesystem()
  fs.invalidate_cache()  # a listing cached by an earlier poll is stale
  return sorted(int(p.split("/")[-2]) for p in fs.glob(
      f"{url}/checkpoints/*/commit_success.txt")
                if p.split("/")[-2].isdigit())


@pytest.mark.slow
def test_pretraining_on_gcs_killed_and_resumed_equals_local(gcs, data_dir,
                                                            tmp_path):
  env = dict(os.environ, **gcs.env,
             BERT_JAX_CACHE_DIR=str(tmp_path / "cache"))
  data_url = f"gs://{gcs.bucket}/data_32"
  storage.upload_tree(data_dir, data_url)
  local = str(tmp_path / "local")
  _run(local, data_dir, env)
  workdir = f"gs://{gcs.bucket}/runs/killed"
  proc = _run(workdir, data_url, env, wait=False)
  deadline = time.monotonic() + 600
  fs = storage.filesystem()
  while not [s for s in _steps_committed(workdir) if s >= 2]:
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.5)
    fs.invalidate_cache()
  proc.kill()
  proc.wait()
  assert not storage.exists(f"{workdir}/results.json")
  out = _run(workdir, data_url, env)
  assert "resumed from the checkpoint at step" in out
  fs.invalidate_cache()
  results = json.loads(storage.read_text(f"{workdir}/results.json"))
  assert results["steps"] == 6
  assert results["checkpoints"]["bert_jax"] == f"{workdir}/export/bert_jax"
  for name in ("bert_config.json", "vocab.txt", "export/hf/config.json"):
    assert storage.exists(f"{workdir}/{name}"), name
  assert fs.glob(f"{workdir}/tensorboard/events.out.tfevents.*")
  remote = storage.cached_copy(f"{workdir}/export/bert_jax",
                               str(tmp_path / "export"))
  a = pretrained._flatten(pretrained.load_bert_jax(  # pylint: disable=protected-access
      os.path.join(local, "export", "bert_jax"))[1])
  b = pretrained._flatten(pretrained.load_bert_jax(remote)[1])  # pylint: disable=protected-access
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_create_pretraining_data_and_extract_features_on_gcs(gcs, tmp_path,
                                                             monkeypatch):
  from bert_jax import extract_features  # pylint: disable=g-import-not-at-top
  from tests import minilm  # pylint: disable=g-import-not-at-top
  from tests import test_create_pretraining_data as cpd  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "cache"))
  base = f"gs://{gcs.bucket}/tools"
  from bert_jax import sources  # pylint: disable=g-import-not-at-top
  storage.copy_file(cpd.VOCAB, f"{base}/vocab/vocab.txt")
  # The corpus too, beside a file its glob does not match.
  name = os.path.basename(cpd.BOTCHAN)
  storage.copy_file(cpd.BOTCHAN, f"{base}/corpus/{name}")
  storage.copy_file(cpd.VOCAB, f"{base}/corpus/notes.md")
  (local_copy,) = sources.expand_inputs(f"{base}/corpus/*.gz")
  assert not storage.is_remote(local_copy)
  assert open(local_copy, "rb").read() == open(cpd.BOTCHAN, "rb").read()
  with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.nope"):
    sources.expand_inputs(f"{base}/corpus/*.nope")
  args = ["--dupe_factor=1", "--max_seq_length=64", "--num_shards=2"]
  r = cpd._cli(f"--input_file={cpd.BOTCHAN}", *args,  # pylint: disable=protected-access
               f"--output_dir={tmp_path / 'local'}",
               f"--vocab_file={cpd.VOCAB}")
  assert r.returncode == 0, r.stderr
  r = subprocess.run(
      [sys.executable, "-m", "bert_jax.create_pretraining_data",
       f"--input_file={base}/corpus/*.gz", *args,
       f"--output_dir={base}/data", f"--vocab_file={base}/vocab/vocab.txt"],
      capture_output=True, text=True, cwd=cpd.ROOT, check=False,
      env=dict(os.environ, **gcs.env))
  assert r.returncode == 0, r.stderr
  got = _read_local_tree(storage.cached_copy(f"{base}/data",
                                             str(tmp_path / "data")))
  got.pop(".bert_jax_cache.json")
  want = _read_local_tree(str(tmp_path / "local"))
  assert sorted(got) == sorted(want)
  for name in want:
    if name != "manifest.json":  # it records times
      assert got[name] == want[name], name

  storage.upload_tree(minilm.model_path(), f"{base}/minilm")
  (tmp_path / "in.txt").write_text("\n".join(minilm.SENTENCES) + "\n")
  storage.copy_file(str(tmp_path / "in.txt"), f"{base}/text/in.txt")
  extract_features.run(minilm.model_path(), str(tmp_path / "in.txt"),
                       str(tmp_path / "out.jsonl"), layers="-1")
  extract_features.run(f"{base}/minilm", f"{base}/text/in.txt",
                       f"{base}/out/out.jsonl", layers="-1")
  storage.filesystem().invalidate_cache()
  assert (storage.read_text(f"{base}/out/out.jsonl")
          == (tmp_path / "out.jsonl").read_text())
  with pytest.raises(FileNotFoundError, match=f"{base}/nothing"):
    extract_features.run(f"{base}/nothing", f"{base}/text/in.txt",
                         f"{base}/out/x.jsonl")

  # convert: a Hugging Face directory in the bucket to a bert_jax checkpoint
  # in the bucket holds what a local conversion holds.
  def convert(src, dst):
    return subprocess.run(
        [sys.executable, "-m", "bert_jax.convert", "--from=hf",
         "--to=bert_jax", src, dst], capture_output=True, text=True,
        cwd=cpd.ROOT, check=False, env=dict(os.environ, **gcs.env))
  assert convert(minilm.model_path(), str(tmp_path / "conv")).returncode == 0
  r = convert(f"{base}/minilm", f"{base}/conv")
  assert r.returncode == 0, r.stderr
  from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
  _, want_params, _ = pretrained.load_pretrained(str(tmp_path / "conv"),
                                                 task="encoder")
  _, got_params, _ = pretrained.load_pretrained(
      storage.local_path(f"{base}/conv"), task="encoder")
  import jax  # pylint: disable=g-import-not-at-top
  for a, b in zip(jax.tree.leaves(want_params), jax.tree.leaves(got_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  r = convert(f"{base}/minilm", f"{base}/conv")  # exists: refused, kept
  assert r.returncode != 0 and "exists" in r.stderr
