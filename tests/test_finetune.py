"""Fine-tuning: batches, the GLUE job end to end, parity with transformers."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import finetune_grid
from bert_jax import train
from configs import finetune as finetune_configs
from tests import test_train

ROOT = test_train.ROOT
POSITIVE = ("good", "happy", "love", "great", "kind")
NEGATIVE = ("bad", "sad", "hate", "evil", "cruel")
FILLER = ("the", "a", "of", "and", "man", "house", "day", "night", "said",
          "went")


def write_sst2(directory, n_train=320, n_dev=37, seed=0):
  """SST-2's layout (`sentence\\tlabel`; test `index\\tsentence`) with a
  signal a small model learns in seconds: one positive or negative word
  among filler words of varying length."""
  rng = random.Random(seed)
  os.makedirs(directory, exist_ok=True)

  def sentence(label):
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 20))]
    words.insert(rng.randrange(len(words) + 1),
                 rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)

  for split, n in (("train", n_train), ("dev", n_dev)):
    with open(os.path.join(directory, f"{split}.tsv"), "w") as f:
      f.write("sentence\tlabel\n")
      for _ in range(n):
        label = rng.randint(0, 1)
        f.write(f"{sentence(label)}\t{label}\n")
  with open(os.path.join(directory, "test.tsv"), "w") as f:
    f.write("index\tsentence\n")
    for i in range(11):
      f.write(f"{i}\t{sentence(i % 2)}\n")
  return str(directory)


def tiny_finetune_config(init_checkpoint, data_dir, task="sst2", **overrides):
  c = finetune_configs.get_config(task)
  c.unlock()
  c.init_checkpoint = init_checkpoint
  c.data_dir = data_dir
  c.max_seq_length = 32
  c.train_batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 1e-3
  c.num_train_epochs = 3.0
  c.log_every_steps = 10
  c.save_checkpoints_steps = 10
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  c.update_from_flattened_dict(overrides)
  c.lock()
  return c


@pytest.fixture(scope="module")
def pretrained_workdir(data_dir, tmp_path_factory):
  """A short pre-training run (its exported model starts the fine-tuning)."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = test_train.tiny_config(data_dir)
  train.train_and_evaluate(config, workdir)
  return os.path.join(workdir, "export", "bert_jax")


def test_feature_batches_cover_each_eval_example_once():
  n, length = 37, 24
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, length + 1, n)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  features = {"input_ids": mask * 7, "input_mask": mask,
              "segment_ids": np.zeros_like(mask),
              "labels": np.arange(n, dtype=np.int32)}
  seen = []
  for p in range(2):  # two hosts, each with its half of every batch
    ds = finetune.FeatureBatches(features, global_batch_size=8, seed=0,
                                 train=False, pad_to_multiple_of=8,
                                 process_index=p, process_count=2)
    assert len(ds) == 5  # ceil(37 / 8)
    for s in range(len(ds)):
      b = ds[s]
      real = b["example_index"] >= 0
      seen += list(b["example_index"][real])
      # Rows are the examples', cut to the batch's longest (rounded to 8).
      np.testing.assert_array_equal(b["labels"][real],
                                    b["example_index"][real])
      assert b["input_ids"].shape[1] % 8 == 0
      assert b["input_ids"].shape[1] >= lengths[b["example_index"][real]].max()
      assert not b["input_mask"][~real].any()
  assert sorted(seen) == list(range(n))


def test_feature_batches_train_stream_is_a_function_of_seed_and_step():
  n = 50
  mask = np.ones((n, 8), np.int32)
  features = {"input_ids": np.arange(n)[:, None] * mask, "input_mask": mask,
              "segment_ids": 0 * mask}
  ds = finetune.FeatureBatches(features, global_batch_size=16, seed=3,
                               train=True, num_epochs=3)
  assert len(ds) == int(50 / 16 * 3)  # TF1's step count
  first = [ds[s]["input_ids"][:, 0] for s in range(len(ds))]
  again = finetune.FeatureBatches(features, global_batch_size=16, seed=3,
                                  train=True, num_epochs=3)
  np.testing.assert_array_equal(first[5], again[5]["input_ids"][:, 0])
  # Each epoch is a permutation: the first 50 stream positions hold every
  # example once.
  stream = np.concatenate(first)
  assert sorted(stream[:50]) == list(range(50))


def test_length_bucketing_keeps_epochs_and_pads_less():
  n, length, b, window = 64, 64, 8, 4
  rng = np.random.default_rng(1)
  lengths = rng.integers(3, length + 1, n)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  features = {"input_ids": mask * np.arange(n)[:, None], "input_mask": mask,
              "segment_ids": 0 * mask}

  def batches(w):
    ds = finetune.FeatureBatches(features, global_batch_size=b, seed=5,
                                 train=True, num_epochs=2,
                                 pad_to_multiple_of=8,
                                 length_bucketing_window=w)
    return [ds[s] for s in range(len(ds))]

  plain, bucketed = batches(0), batches(window)
  assert len(bucketed) == len(plain) == 16
  for epoch in range(2):  # each epoch holds every example once
    ids = np.concatenate([x["input_ids"][:, 0] for x in
                          bucketed[8 * epoch:8 * (epoch + 1)]])
    assert sorted(ids) == list(range(n))
  for w in range(0, 16, window):  # a window's batches do not interleave
    spans = sorted((lengths[x["input_ids"][:, 0]].min(),
                    lengths[x["input_ids"][:, 0]].max())
                   for x in bucketed[w:w + window])
    assert all(a[1] <= c[0] for a, c in zip(spans, spans[1:]))
  tokens = lambda bs: sum(x["input_ids"].size for x in bs)
  assert tokens(bucketed) < 0.8 * tokens(plain)
  again = batches(window)
  np.testing.assert_array_equal(again[9]["input_ids"],
                                bucketed[9]["input_ids"])


@pytest.mark.slow
def test_glue_finetune_learns_exports_and_matches_transformers(
    pretrained_workdir, tmp_path):
  data = write_sst2(tmp_path / "SST-2")
  workdir = str(tmp_path / "ft")
  config = tiny_finetune_config(pretrained_workdir, data)
  results = train.train_and_evaluate(config, workdir)
  # 320 examples x 3 epochs / 16.
  assert results["steps"] == 60
  assert results["task"] == "sst2"
  # The pre-training export has no classifier: it starts as the original's.
  assert ("classifier (2 outputs) freshly initialised: truncated normal, "
          "stddev 0.02") in results["init"]
  assert results["eval_accuracy"] > 0.9, results  # chance: 0.5
  assert set(results) >= {"eval_loss", "train_seconds",
                          "examples_per_second", "predictions"}
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["eval_accuracy"] == results["eval_accuracy"]
  # Dev predictions: one row per example; the test split's GLUE file.
  dev = open(results["predictions"]["dev"]).read().splitlines()
  assert dev[0] == "guid\tprediction\tlabel" and len(dev) == 1 + 37
  sub = open(results["predictions"]["test"]).read().splitlines()
  assert sub[0] == "index\tprediction" and len(sub) == 1 + 11
  assert os.path.basename(results["predictions"]["test"]) == "SST-2.tsv"
  correct = sum(r.split("\t")[1] == r.split("\t")[2] for r in dev[1:])
  np.testing.assert_allclose(correct / 37, results["eval_accuracy"])

  # The exported model, read by transformers, gives the logits ours gives.
  _assert_hf_logits_equal(config, workdir, results["checkpoints"]["hf"])


def _assert_hf_logits_equal(config, workdir, hf_dir, n=12):
  """transformers' BertForSequenceClassification on our export == ours."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf = transformers.BertForSequenceClassification.from_pretrained(
      hf_dir).eval()
  task = train.tasks.from_config(config)
  task.prepare(workdir)
  split = task.evals[0]
  feats = {k: torch.tensor(v[:n], dtype=torch.long)
           for k, v in split.features.items() if k != "labels"}
  with torch.no_grad():
    theirs = hf(input_ids=feats["input_ids"],
                attention_mask=feats["input_mask"],
                token_type_ids=feats["segment_ids"]).logits.numpy()
  mesh = train.make_mesh(config)
  fns = train.make_train_step(config, mesh, task=task)
  _, state, _ = train.checkpoints.Checkpointer(
      os.path.join(workdir, "checkpoints")).restore_latest(fns.abstract_state)
  batch = {**{k: v[:n] for k, v in split.features.items()},
           "example_index": np.arange(n, dtype=np.int32)}
  with train.sharding.activation_rules(mesh, train.rules_of(config)):
    ours = np.asarray(jax.jit(lambda p, b: task.eval_outputs(
        train.nnx.merge(fns.graphdef, p), b)["logits"])(
            state["params"], batch))
  np.testing.assert_allclose(ours, theirs, atol=2e-5)
  return hf, theirs


def test_pretraining_workdir_is_an_init_checkpoint(pretrained_workdir):
  """A pre-training run's workdir starts fine-tuning from its newest
  checkpoint: the same encoder as the export its end-of-run wrote."""
  workdir = os.path.dirname(os.path.dirname(pretrained_workdir))
  config = tiny_finetune_config(workdir, "")
  from_workdir = finetune.load_encoder(config)
  from_export = finetune.load_encoder(
      tiny_finetune_config(pretrained_workdir, ""))
  assert from_workdir.config == from_export.config
  leaves = jax.tree.leaves_with_path(from_workdir.params)
  assert len(leaves) == len(jax.tree.leaves(from_export.params)) > 10
  for path, a in leaves:
    b = from_export.params
    for k in path:
      b = b[k.key]
    np.testing.assert_array_equal(a, b, err_msg=str(path))
  # The vocabulary comes with the workdir (no vocab_file flag needed).
  assert (open(from_workdir.vocab_file).read()
          == open(from_export.vocab_file).read())


def test_causal_checkpoint_fine_tunes_causal_and_pools_its_last_token(
    tmp_path):
  """An LTR checkpoint stays causal; its classifier reads the last real
  token (under causal attention [CLS] sees only itself)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
  cfg = model_lib.BertConfig(vocab_size=64, hidden_size=32, num_layers=2,
                             num_heads=2, intermediate_size=64,
                             max_position_embeddings=32, attention="causal")
  params = pretrained.init_params(cfg, nsp=False)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                              *(f"w{i}" for i in range(59))]) + "\n")
  ckpt = pretrained.save_bert_jax(cfg, params, str(vocab),
                                  str(tmp_path / "ltr"))
  encoder = finetune.load_encoder(tiny_finetune_config(ckpt, ""))
  assert encoder.config.attention == "causal"

  model = heads.BertForSequenceClassification(
      encoder.config.replace(hidden_dropout_prob=0.0,
                             attention_dropout_prob=0.0), 3,
      rngs=nnx.Rngs(0))
  ids = np.array([[2, 7, 8, 9, 3, 0, 0], [2, 7, 8, 3, 0, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  out = model.bert(ids, None, mask)
  lengths = mask.sum(1)
  expected = np.tanh(np.asarray(out.sequence_output)[[0, 1], lengths - 1]
                     @ np.asarray(model.bert.pooler.kernel[...])
                     + np.asarray(model.bert.pooler.bias[...]))
  np.testing.assert_allclose(out.pooled_output, expected, rtol=1e-5,
                             atol=1e-6)
  # So the prediction depends on the text, not only on [CLS].
  other = ids.copy()
  other[0, 3] = 10
  assert not np.allclose(model(other, 0 * ids, mask)[0], model(ids, 0 * ids,
                                                                mask)[0])
  with pytest.raises(ValueError, match="causal"):
    pretrained.export_hf_classifier(
        encoder.config, {"bert": encoder.params,
                         "classifier": {"kernel": np.zeros((32, 3)),
                                        "bias": np.zeros(3)}},
        None, str(tmp_path / "hf"), labels=["a", "b", "c"])


def test_regression_task_matches_transformers(pretrained_workdir, tmp_path):
  """STS-B: one output, mean squared error, Pearson/Spearman."""
  rng = random.Random(1)
  d = tmp_path / "STS-B"
  d.mkdir()
  header = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
            "sentence1\tsentence2\tscore\n")
  for split, n in (("train", 96), ("dev", 21)):
    with open(d / f"{split}.tsv", "w") as f:
      f.write(header)
      for i in range(n):
        k = rng.randint(0, 5)
        a = " ".join(["good"] * k + ["the"] * (5 - k))
        f.write(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\tthe day\t"
                f"{k:.3f}\n")
  config = tiny_finetune_config(pretrained_workdir, str(d), task="stsb",
                                num_train_epochs=3.0)
  workdir = str(tmp_path / "ft")
  results = train.train_and_evaluate(config, workdir)
  assert {"eval_pearson", "eval_spearman"} <= set(results)
  assert results["eval_spearman"] > 0.8, results
  hf, scores = _assert_hf_logits_equal(config, workdir,
                                       results["checkpoints"]["hf"], n=21)
  assert hf.config.num_labels == 1 and hf.config.problem_type == "regression"
  assert scores.shape == (21, 1)


def _main(workdir, config_arg, *overrides):
  return subprocess.Popen(
      [sys.executable, "-m", "bert_jax.main", f"--config={config_arg}",
       f"--workdir={workdir}", *overrides],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _flags(init, data, **extra):
  flags = {"init_checkpoint": init, "data_dir": data, "max_seq_length": 32,
           "train_batch_size": 16, "eval_batch_size": 16,
           "learning_rate": 1e-3, "num_train_epochs": 3.0,
           "log_every_steps": 5, "save_checkpoints_steps": 5,
           "export": False, **extra}
  return [f"--config.{k}={v}" for k, v in flags.items()]


@pytest.mark.slow
def test_killed_finetune_resumes_bitwise(pretrained_workdir, tmp_path):
  data = write_sst2(tmp_path / "SST-2", n_train=160)
  flags = _flags(pretrained_workdir, data)
  whole = str(tmp_path / "whole")
  proc = _main(whole, "configs/finetune.py:sst2", *flags)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  killed = str(tmp_path / "killed")
  proc = _main(killed, "configs/finetune.py:sst2", *flags)
  ckpt = os.path.join(killed, "checkpoints", "10")
  start = time.time()
  while not os.path.exists(ckpt):
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() - start < 240
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc = _main(killed, "configs/finetune.py:sst2", *flags)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert "resumed from the checkpoint at step" in out
  a = json.load(open(os.path.join(whole, "results.json")))
  b = json.load(open(os.path.join(killed, "results.json")))
  assert a["steps"] == b["steps"] == 30
  assert a["eval_accuracy"] == b["eval_accuracy"]
  assert a["eval_loss"] == b["eval_loss"]  # bitwise: the same float
  assert (open(a["predictions"]["dev"]).read()
          == open(b["predictions"]["dev"]).read())


def test_bad_glue_input_is_one_line(pretrained_workdir, tmp_path):
  data = write_sst2(tmp_path / "SST-2", n_train=40)
  with open(os.path.join(data, "train.tsv"), "a") as f:
    f.write("a sentence with a label outside the set\t7\n")
  proc = _main(str(tmp_path / "w"), "configs/finetune.py:sst2",
               *_flags(pretrained_workdir, data))
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in out, out[-3000:]
  assert "train.tsv:42" in out and "7" in out.splitlines()[-1], out[-2000:]
  proc = _main(str(tmp_path / "w2"), "configs/finetune.py:sst2",
               *_flags(pretrained_workdir, str(tmp_path / "nothing")))
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0 and "Traceback" not in out
  assert "config.data_dir" in out.splitlines()[-1]


def test_grid_summary_is_mean_and_sample_std():
  rows = finetune_grid.summarize({(2e-5, 32, 3): [0.8, 0.9, 0.7],
                                  (5e-5, 32, 3): [0.85, 0.86, 0.87]})
  assert rows[0]["learning_rate"] == 5e-5  # best mean first
  np.testing.assert_allclose(rows[0]["mean"], 0.86)
  np.testing.assert_allclose(rows[1]["std"], 0.1)  # sample std of .8,.9,.7
  assert finetune_grid.headline_metric("cola") == "eval_matthews_corrcoef"


def test_finetune_configs_compose():
  c = finetune_configs.get_config("task=mnli,model=large,dtype=bfloat16")
  assert (c.task, c.model.preset, c.model.dtype) == ("mnli", "large",
                                                     "bfloat16")
  assert finetune_configs.get_config("cola").task == "cola"
  with pytest.raises(ValueError, match="unknown fine-tuning task"):
    finetune_configs.get_config("squad")
  with pytest.raises(ValueError, match="KEY=VALUE"):
    finetune_configs.get_config("task=mnli,size=large")
  with pytest.raises(AttributeError):
    finetune_configs.get_config("mrpc").nonexistent_key = 1


@pytest.mark.slow
def test_finetune_with_everything_on_gcs_equals_local(
    gcs, pretrained_workdir, tmp_path, monkeypatch):
  """workdir, init_checkpoint (a pre-training workdir) and data_dir as
  gs:// URLs on the emulator: the run a local one makes, same seed."""
  from bert_jax import storage  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "cache"))
  data = write_sst2(tmp_path / "SST-2", n_train=160)
  init = os.path.dirname(os.path.dirname(pretrained_workdir))
  bucket = f"gs://{gcs.bucket}/ft"
  storage.upload_tree(data, f"{bucket}/SST-2")
  storage.upload_tree(init, f"{bucket}/pretrain")
  overrides = {"export": False, "log_every_steps": 5}
  local = train.train_and_evaluate(
      tiny_finetune_config(init, data, **overrides), str(tmp_path / "local"))
  workdir = f"{bucket}/run"
  # A subprocess, as a job runs (and tensorboardX's GCS writers upload
  # again when collected at exit: here, while the emulator still runs).
  c = tiny_finetune_config(init, data, **overrides)
  flags = [f"--config.{k}={c[k]}" for k in (
      "max_seq_length", "train_batch_size", "eval_batch_size",
      "learning_rate", "num_train_epochs", "log_every_steps",
      "save_checkpoints_steps", "export")] + [
          "--config.model.hidden_dropout_prob=0.0",
          "--config.model.attention_dropout_prob=0.0",
          f"--config.init_checkpoint={bucket}/pretrain",
          f"--config.data_dir={bucket}/SST-2"]
  proc = subprocess.Popen(
      [sys.executable, "-m", "bert_jax.main",
       "--config=configs/finetune.py:sst2", f"--workdir={workdir}", *flags],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, **gcs.env))
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  storage.filesystem().invalidate_cache()
  written = json.loads(storage.read_text(f"{workdir}/results.json"))
  assert written["steps"] == local["steps"] == 30
  assert written["eval_accuracy"] == local["eval_accuracy"]
  assert written["eval_loss"] == local["eval_loss"]
  assert written["init_checkpoint"] == f"{bucket}/pretrain"
  assert f"{bucket}/pretrain (step " in written["init"]
  assert written["predictions"]["dev"] == f"{workdir}/predictions/dev.tsv", (
      written["predictions"])
  assert (storage.read_text(written["predictions"]["dev"])
          == open(local["predictions"]["dev"]).read())
  # Only the newest checkpoint of the pre-training workdir was fetched.
  cached = os.path.join(str(tmp_path / "cache"), "gcs", gcs.bucket, "ft",
                        "pretrain")
  assert len(os.listdir(os.path.join(cached, "checkpoints"))) == 1
  assert not os.path.exists(os.path.join(cached, "tensorboard"))

  # A URL with nothing there: one line naming it, before any step.
  for key in ("data_dir", "init_checkpoint"):
    urls = {"init_checkpoint": f"{bucket}/pretrain",
            "data_dir": f"{bucket}/SST-2", key: f"{bucket}/missing"}
    with pytest.raises(train.ConfigError) as e:
      train.train_and_evaluate(
          tiny_finetune_config(urls["init_checkpoint"], urls["data_dir"]),
          f"{bucket}/bad")
    msg = str(e.value)
    assert f"config.{key}='{bucket}/missing'" in msg and "\n" not in msg


# The layouts that differ in what the job does with them: CoLA (no header,
# Matthews), MRPC (F1, BOM header), QQP (short rows skipped), MNLI (two dev
# sets, two test sets and AX); QNLI, RTE and WNLI read as MNLI's pairs do
# (tests/test_glue.py reads every split of every task).
GLUE_DIRS = {"cola": "CoLA", "mrpc": "MRPC", "qqp": "QQP", "mnli": "MNLI"}


@pytest.fixture(scope="module")
def glue_data(tmp_path_factory):
  """Every GLUE task's files in the official layout (tests/test_glue)."""
  from tests import test_glue  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("glue_data"))
  for name, rows in test_glue.FILES.items():
    test_glue._write(os.path.join(root, name), rows)  # pylint: disable=protected-access
  return root


@pytest.mark.parametrize("task", sorted(GLUE_DIRS))
def test_every_glue_task_runs_through_the_job(pretrained_workdir, glue_data,
                                              tmp_path, task):
  """The job on each task's official layout: its metrics under TF1's names
  equal scikit-learn's on the prediction files it wrote, and the GLUE-server
  files hold one prediction per test example (MNLI: both test sets and AX)."""
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  data = os.path.join(glue_data, GLUE_DIRS[task])
  config = tiny_finetune_config(
      pretrained_workdir, data, task=task, train_batch_size=8,
      eval_batch_size=8, num_train_epochs=8.0, export=False)
  results = train.train_and_evaluate(config, str(tmp_path / "ft"))
  spec = glue.task_spec(task)
  for i, split in enumerate(spec.eval_splits):
    rows = [l.split("\t") for l in
            open(results["predictions"][split]).read().splitlines()[1:]]
    examples, _ = glue.read_examples(spec, data, split)
    assert [r[0] for r in rows] == [e.guid for e in examples]
    pred, gold = [r[1] for r in rows], [r[2] for r in rows]
    tag = "" if i == 0 else split.replace("dev_", "") + "_"
    assert results[f"eval_{tag}accuracy"] == pytest.approx(
        skm.accuracy_score(gold, pred))
    if spec.metric_kind == "matthews":
      assert results["eval_matthews_corrcoef"] == pytest.approx(
          skm.matthews_corrcoef(gold, pred))
    if spec.metric_kind == "accuracy_f1":
      assert results["eval_f1"] == pytest.approx(
          skm.f1_score(gold, pred, pos_label="1", zero_division=0.0))
  expected = {s: spec.submission_file(s) for s in spec.test_splits}
  for split, name in expected.items():
    path = results["predictions"][split]
    assert os.path.basename(path) == name
    examples, _ = glue.read_examples(spec, data, split)
    lines = open(path).read().splitlines()
    assert lines[0] == "index\tprediction"
    assert [l.split("\t")[0] for l in lines[1:]] == [e.guid for e in examples]
    assert {l.split("\t")[1] for l in lines[1:]} <= set(spec.labels)


def test_mnli_data_on_gcs_brings_ax_from_beside_it(gcs, glue_data, tmp_path,
                                                  monkeypatch):
  """A gs:// MNLI directory: its cached copy has AX's `diagnostic` beside
  it, where the reader looks, and reads as the local directory does."""
  from bert_jax import storage  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "cache"))
  base = f"gs://{gcs.bucket}/glue_ax"
  storage.upload_tree(glue_data, base)
  config = tiny_finetune_config("", f"{base}/MNLI", task="mnli")
  task = train.tasks.from_config(config)
  task.localize_inputs()
  assert not storage.is_remote(task.config.data_dir)
  spec = glue.task_spec("mnli")
  for split in ("train", "dev_matched", "ax"):
    assert (glue.read_examples(spec, task.config.data_dir, split)[0]
            == glue.read_examples(spec, os.path.join(glue_data, "MNLI"),
                                  split)[0])


def test_one_step_of_a_run_on_gcs_is_an_init_checkpoint(
    gcs, pretrained_workdir, tmp_path, monkeypatch):
  """gs://.../WORKDIR/checkpoints/<step> reads that step, as locally."""
  from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
  from bert_jax import storage  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "cache"))
  run = os.path.dirname(os.path.dirname(pretrained_workdir))
  steps = sorted(int(s) for s in os.listdir(os.path.join(run, "checkpoints"))
                 if s.isdigit())
  url = f"gs://{gcs.bucket}/one_step/run"
  storage.upload_tree(run, url)
  for step in (steps[0], steps[-1]):
    local = storage.local_path(f"{url}/checkpoints/{step}")
    assert local.endswith(os.path.join("checkpoints", str(step)))
    _, want, _ = pretrained.load_pretrained(
        os.path.join(run, "checkpoints", str(step)), task="encoder")
    _, got, _ = pretrained.load_pretrained(local, task="encoder")
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Only the step asked for is on disk (the first's files were removed).
  on_disk = {os.path.relpath(os.path.join(p, n), os.path.dirname(local))
             .split(os.sep)[0] for p, _, names in os.walk(
                 os.path.dirname(local)) for n in names}
  assert on_disk == {str(steps[-1])}
