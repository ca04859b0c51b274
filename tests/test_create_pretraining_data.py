"""The create_pretraining_data job: CLI, manifest, objectives, failures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import pretraining_data as pd
from bert_jax import records
from bert_jax import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
BOTCHAN = os.path.join(ROOT, "data/corpus/botchan.txt.gz")


def _cli(*args):
  return subprocess.run(
      [sys.executable, "-m", "bert_jax.create_pretraining_data", *args],
      capture_output=True, text=True, cwd=ROOT, check=False)


def _records(out_dir, manifest, split="train"):
  return [records.parse_example(r)
          for s in manifest[split]["shards"]
          for r in records.read_records(os.path.join(out_dir, s["file"]))]


def test_cli_ltr_manifest_and_one_line_errors(tmp_path):
  out = tmp_path / "ltr"
  r = _cli(f"--input_file={BOTCHAN}", f"--output_dir={out}",
           f"--vocab_file={VOCAB}", "--objective=ltr", "--max_seq_length=64",
           "--dupe_factor=1", "--num_shards=3", "--format=tfrecord")
  assert r.returncode == 0, r.stderr
  m = json.load(open(out / "manifest.json"))
  assert m["options"]["objective"] == "ltr"
  assert m["options"]["masking"] == "none"
  assert [s["file"] for s in m["train"]["shards"]] == [
      f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
  assert sorted(os.listdir(out)) == sorted(
      ["manifest.json"] + [s["file"] for s in m["train"]["shards"]])
  recs = _records(str(out), m)
  assert len(recs) == m["train"]["instances"] > 100
  # Left-to-right data: the inputs only; targets are the next tokens.
  assert set(recs[0]) == {"input_ids", "input_mask", "segment_ids"}
  assert m["source_stats"]["documents"] == 11

  # Bad input: one line naming the file or flag, exit status 1, no shards.
  for args, needle in (
      ([f"--vocab_file={tmp_path}/nope.txt"], "nope.txt"),
      (["--mask_ratios=0.8,0.1"], "--mask_ratios"),
      ([f"--input_file={tmp_path}/none*.txt"], "none*.txt")):
    flags = {"--input_file": BOTCHAN, "--output_dir": str(tmp_path / "bad"),
             "--vocab_file": VOCAB}
    for a in args:
      k, v = a.split("=", 1)
      flags[k] = v
    r = _cli(*[f"{k}={v}" for k, v in flags.items()])
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last, r.stderr
  assert not os.path.exists(tmp_path / "bad" / "manifest.json")


def test_mlm_objective_and_seed_determinism(tmp_path):
  def make(name, seed, objective="mlm"):
    opts = pd.DataOptions(max_seq_length=64, max_predictions_per_seq=10,
                          dupe_factor=1, objective=objective)
    return pd.create_pretraining_data(
        BOTCHAN, str(tmp_path / name), VOCAB, opts=opts, random_seed=seed,
        num_shards=2)
  a, b, c = make("a", 1), make("b", 1), make("c", 2)
  assert [s["sha256"] for s in a["train"]["shards"]] == [
      s["sha256"] for s in b["train"]["shards"]]
  assert [s["sha256"] for s in a["train"]["shards"]] != [
      s["sha256"] for s in c["train"]["shards"]]
  assert a["options"]["objective"] == "mlm"
  recs = _records(str(tmp_path / "a"), a)
  # No NSP: the full TF1 feature set, one segment, label always 0.
  assert set(recs[0]) == set(records.FEATURE_NAMES)
  assert all(r["next_sentence_labels"][0] == 0 for r in recs)
  assert all(not r["segment_ids"].any() for r in recs)
  assert np.mean([r["input_mask"].sum() for r in recs]) > 50


def test_failure_mid_run_leaves_no_complete_looking_shard(tmp_path,
                                                          monkeypatch):
  calls = []
  real = pd.create_instances

  def flaky(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError("disk on fire")
    return real(*args, **kwargs)

  monkeypatch.setattr(pd, "create_instances", flaky)
  out = tmp_path / "out"
  opts = pd.DataOptions(max_seq_length=64, max_predictions_per_seq=10,
                        dupe_factor=1)
  with pytest.raises(RuntimeError, match="disk on fire"):
    pd.create_pretraining_data(BOTCHAN, str(out), VOCAB, opts=opts,
                               num_shards=2, group_sentences=200)
  assert len(calls) == 3
  # Neither shards nor temporaries nor a manifest: a rerun starts clean.
  assert os.listdir(out) == []


def test_batched_serialization_matches_protobuf():
  # The reference: tf.train.Example built and serialised by protobuf
  # (records' Example class is TensorFlow's: the test below).
  rng = np.random.default_rng(0)
  for high in (100, 30522, 1 << 34):
    for n in (1, 50, 5000):  # 5000: more than one assembly batch
      batch = {
          "input_ids": rng.integers(0, high, (n, 64)),
          "input_mask": rng.integers(0, 2, (n, 64)).astype(np.int32),
          "word_start": rng.integers(0, 2, (n, 64)).astype(np.int32),
          "masked_lm_positions": rng.integers(0, 300, (n, 10)).astype(
              np.int32),
          "masked_lm_weights": rng.random((n, 10)).astype(np.float32),
          "next_sentence_labels": (np.arange(n) % 2)[:, None].astype(
              np.int32),
          "empty": np.zeros((n, 0), np.int32),
      }
      assert records.serialize_instances(batch) == [
          records.serialize_example({k: v[i] for k, v in batch.items()})
          for i in range(n)]


def test_examples_without_tensorflow_are_tensorflows():
  """records' own tf.train.Example: TF's bytes, and TF's parse of them."""
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(2)
  spec = (("input_ids", False, 64), ("masked_lm_weights", True, 10),
          ("next_sentence_labels", False, 1))
  rows = [{"input_ids": rng.integers(0, 1 << 34, 64),
           "masked_lm_weights": rng.random(10).astype(np.float32),
           "next_sentence_labels": rng.integers(0, 2, 1)} for _ in range(40)]

  def tf_example(row):
    return tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
        if k == "masked_lm_weights" else
        tf.train.Feature(int64_list=tf.train.Int64List(value=v))
        for k, v in row.items()}))

  for row in rows:
    assert records.serialize_example(row) == tf_example(
        row).SerializeToString(deterministic=True)
  # TF's own (map-order) bytes, as the original script writes them.
  raw = [tf_example(row).SerializeToString() for row in rows]
  ours = records.parse_examples(raw, spec)
  theirs = tf.io.parse_example(tf.constant(raw), {
      k: tf.io.FixedLenFeature([n], tf.float32 if f else tf.int64)
      for k, f, n in spec})
  for k, f, _ in spec:
    np.testing.assert_array_equal(
        ours[k], theirs[k].numpy().astype(np.float32 if f else np.int32))
  for bad_spec in ((("input_ids", False, 63),),
                   (("segment_ids", False, 64),),
                   (("input_ids", True, 64),)):
    with pytest.raises(ValueError, match=bad_spec[0][0]):
      records.parse_examples(raw, bad_spec)


def test_tfrecord_files_equal_tensorflows_byte_for_byte(tmp_path):
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(1)
  payloads = [rng.bytes(int(n)) for n in rng.integers(0, 3000, 200)]
  payloads += [b"", b"x" * 70000]
  with records.RecordWriter(str(tmp_path / "ours.tfrecord")) as w:
    for p in payloads:
      w.write(p)
  with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
    for p in payloads:
      w.write(p)
  assert ((tmp_path / "ours.tfrecord").read_bytes()
          == (tmp_path / "tf.tfrecord").read_bytes())
  assert list(records.read_records(str(tmp_path / "ours.tfrecord"))) == payloads


def test_sentence_splitting_in_workers_changes_nothing(tmp_path):
  # Raw paragraphs are split by pysbd in the worker processes; the records
  # and counts must equal a single-process run's, and the split must match
  # sources.iter_documents (the in-process reader).
  import gzip  # pylint: disable=g-import-not-at-top
  with gzip.open(BOTCHAN, "rt") as f:
    docs = f.read().split("\n\n")[:4]
  raw = tmp_path / "raw.txt"
  raw.write_text("\n\n".join(" ".join(d.split("\n")) for d in docs) + "\n")
  opts = pd.DataOptions(max_seq_length=64, max_predictions_per_seq=10,
                        dupe_factor=1)
  runs = [pd.create_pretraining_data(
      str(raw), str(tmp_path / f"w{n}"), VOCAB, opts=opts, num_shards=2,
      num_workers=n, input_format="raw", group_sentences=300)
          for n in (1, 2)]
  assert [s["sha256"] for s in runs[0]["train"]["shards"]] == [
      s["sha256"] for s in runs[1]["train"]["shards"]]
  assert runs[0]["source_stats"] == runs[1]["source_stats"]
  stats = sources.SourceStats()
  split = list(sources.iter_documents(str(raw), stats, "raw"))
  assert len(split) == 4 and stats.as_dict() == runs[1]["source_stats"]
  assert stats.sentences > 4 * 20  # paragraphs really were split
