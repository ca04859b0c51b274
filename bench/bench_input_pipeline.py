"""Input-pipeline throughput on ONE CPU core: bert_jax vs a TF1-style tf.data.

    python bench/bench_input_pipeline.py [--core 0] [--records 32768]
        [--seconds 5] [--batch_size 256] [--devices 1] [--data_dir DIR]
        [--output r.json]

Writes realistic pre-training shards (seq 128, 20 predictions, random
WordPiece ids, 10% short sequences as the original script makes them) as
ArrayRecord, plus the same records as TFRecord, then times, pinned to one
core (`os.sched_setaffinity`, before TensorFlow or JAX start their thread
pools) and with no worker processes:

  numpy      the full pipeline up to this host's numpy batches
  jax        the same plus `jax.make_array_from_process_local_data` onto a
             mesh of the local devices (batch sharded over them)
  dynamic    unmasked records masked in the pipeline (token / whole word)
  tf.data    the TF1 `run_pretraining.py` input_fn on the TFRecord copy:
             file shuffle, interleave, shuffle(100), batch, parse_example

and prints sequences/s, the ratio to the 5,000 sequences/s target (twice
what one TPU v3-8 host consumes for BERT-Base at 50% utilisation) and the
ratio to tf.data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

TARGET = 5000.0


def _write_data(directory: str, num_records: int, num_shards: int,
                dynamic: bool) -> None:
  """Realistic records: the shapes and id statistics of BERT's data."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(12345)
  seq, pred = 128, 20
  writers = []
  for fmt in ("array_record", "tfrecord"):
    os.makedirs(os.path.join(directory, fmt), exist_ok=True)
    for s in range(num_shards):
      writers.append(records.RecordWriter(os.path.join(
          directory, fmt, records.shard_filename("train", s, num_shards,
                                                 fmt))))
  for w in writers:
    w.__enter__()
  try:
    for i in range(num_records):
      # short_seq_prob = 0.1: a tenth of the sequences are shorter.
      n = seq if rng.random() > 0.1 else int(rng.integers(8, seq))
      ids = np.zeros(seq, np.int64)
      ids[:n] = rng.integers(1000, 30522, n)
      a = int(rng.integers(1, n - 2))
      ids[0], ids[a], ids[n - 1] = 101, 102, 102
      ex = {"input_ids": ids,
            "input_mask": (np.arange(seq) < n).astype(np.int64),
            "segment_ids": ((np.arange(seq) > a) &
                            (np.arange(seq) < n)).astype(np.int64)}
      if dynamic:
        ex["next_sentence_labels"] = np.array([i % 2])
        ex["word_start"] = (rng.random(seq) < 0.75).astype(np.int64)
      else:
        k = min(pred, max(1, round(n * 0.15)))
        pos = np.zeros(pred, np.int64)
        pos[:k] = np.sort(rng.choice(np.arange(1, n - 1), k, replace=False))
        ex["masked_lm_positions"] = pos
        ex["masked_lm_ids"] = np.where(np.arange(pred) < k, ids[pos], 0)
        ex["masked_lm_weights"] = (np.arange(pred) < k).astype(np.float32)
        ex["next_sentence_labels"] = np.array([i % 2])
      rec = records.serialize_example(ex)
      writers[i % num_shards].write(rec)
      writers[num_shards + i % num_shards].write(rec)
  finally:
    for w in writers:
      w.__exit__(None, None, None)


def _rate(it, batch_size: int, seconds: float, warmup: int = 3) -> float:
  for _ in range(warmup):
    next(it)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    batch = next(it)
    n += batch_size
  # Arrays may still be in flight; count them as done only when ready.
  if isinstance(batch, dict):
    for v in batch.values():
      getattr(v, "block_until_ready", lambda: None)()
  return n / (time.perf_counter() - start)


def _tf_data(pattern: str, batch_size: int, seed: int):
  """The TF1 run_pretraining.py input_fn (training branch), TF2 spelling."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seq, pred = 128, 20
  features = {
      "input_ids": tf.io.FixedLenFeature([seq], tf.int64),
      "input_mask": tf.io.FixedLenFeature([seq], tf.int64),
      "segment_ids": tf.io.FixedLenFeature([seq], tf.int64),
      "masked_lm_positions": tf.io.FixedLenFeature([pred], tf.int64),
      "masked_lm_ids": tf.io.FixedLenFeature([pred], tf.int64),
      "masked_lm_weights": tf.io.FixedLenFeature([pred], tf.float32),
      "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
  }
  files = tf.io.gfile.glob(pattern)
  d = tf.data.Dataset.from_tensor_slices(tf.constant(files))
  d = d.repeat().shuffle(len(files), seed=seed)
  d = d.interleave(tf.data.TFRecordDataset, cycle_length=len(files),
                   num_parallel_calls=tf.data.AUTOTUNE)
  d = d.shuffle(100, seed=seed).batch(batch_size, drop_remainder=True)

  def decode(serialized):
    ex = tf.io.parse_example(serialized, features)
    return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v
            for k, v in ex.items()}

  d = d.map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  return d.as_numpy_iterator()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--core", type=int, default=0)
  parser.add_argument("--records", type=int, default=32768)
  parser.add_argument("--shards", type=int, default=8)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--seconds", type=float, default=5.0)
  parser.add_argument("--num_threads", type=int, default=4,
                      help="grain prefetch threads (all on the one core)")
  parser.add_argument("--devices", type=int, default=1,
                      help="CPU devices the global batch is sharded over")
  parser.add_argument("--data_dir", default=None,
                      help="where to write the shards (default: a temp dir)")
  parser.add_argument("--output", default=None, help="write results as JSON")
  args = parser.parse_args()

  # Before TensorFlow or JAX size their thread pools: everything on one core.
  os.sched_setaffinity(0, {args.core})
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count="
                             f"{args.devices}")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from bert_jax import input_pipeline as ip  # pylint: disable=g-import-not-at-top

  tmp = tempfile.TemporaryDirectory() if args.data_dir is None else None
  root = args.data_dir or tmp.name
  static_dir, dynamic_dir = (os.path.join(root, "static"),
                             os.path.join(root, "dynamic"))
  t0 = time.perf_counter()
  for d, dyn in ((static_dir, False), (dynamic_dir, True)):
    if not os.path.isdir(os.path.join(d, "array_record")):
      _write_data(d, args.records, args.shards, dyn)
  print(f"data: {args.records} records x 2 (static, dynamic) in "
        f"{args.shards} shards, seq 128, 20 predictions "
        f"({time.perf_counter() - t0:.1f} s to write) in {root}")
  print(f"pinned to core {args.core} of {os.cpu_count()} "
        f"(affinity {sorted(os.sched_getaffinity(0))}); batch "
        f"{args.batch_size}, {args.num_threads} grain threads, no worker "
        "processes")

  b = args.batch_size
  results = {}

  def pipeline(directory, sharding=None, masking_spec=None):
    ds = ip.make_dataset(os.path.join(directory, "array_record"),
                         global_batch_size=b, seed=0, max_seq_length=128,
                         dynamic_masking=masking_spec)
    return ip.GlobalBatchIterator(ds, sharding,
                                  num_threads=args.num_threads)

  results["numpy"] = _rate(pipeline(static_dir), b, args.seconds)
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  results["jax"] = _rate(pipeline(static_dir, sharding), b, args.seconds)
  spec = ip.MaskingSpec(vocab_size=30522, mask_id=103,
                        special_ids=(101, 102, 0))
  results["dynamic"] = _rate(pipeline(dynamic_dir, masking_spec=spec), b,
                             args.seconds)
  wwm = ip.MaskingSpec(**{**spec.__dict__, "whole_word_mask": True})
  results["dynamic_wwm"] = _rate(pipeline(dynamic_dir, masking_spec=wwm), b,
                                 args.seconds)
  results["tf.data"] = _rate(
      _tf_data(os.path.join(static_dir, "tfrecord", "*.tfrecord"), b, 0), b,
      args.seconds)

  peer = results["tf.data"]
  labels = {
      "numpy": "bert_jax -> numpy batches",
      "jax": f"bert_jax -> global jax.Array ({len(jax.devices())} dev)",
      "dynamic": "bert_jax + dynamic masking",
      "dynamic_wwm": "bert_jax + dynamic whole-word masking",
      "tf.data": "tf.data, TF1 run_pretraining input_fn",
  }
  print(f"\n{'pipeline (one core, seq 128)':44s} {'seq/s':>9s} "
        f"{'/5000':>7s} {'/tf.data':>9s}")
  for k, v in results.items():
    print(f"{labels[k]:44s} {v:9.0f} {v / TARGET:6.2f}x {v / peer:8.2f}x")
  ok = results["numpy"] >= TARGET and results["jax"] >= TARGET
  print(f"\ntarget >= {TARGET:.0f} seq/s on one core: "
        f"{'met' if ok else 'NOT met'}")
  if args.output:
    with open(args.output, "w") as f:
      json.dump({"sequences_per_second": results, "target": TARGET,
                 "batch_size": b, "device": jax.devices()[0].device_kind,
                 "cores": 1}, f, indent=1)
  if tmp is not None:
    tmp.cleanup()


if __name__ == "__main__":
  main()
