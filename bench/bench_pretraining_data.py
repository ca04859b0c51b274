"""Example creation: bert_jax against a faithful single-process TF1 run.

The peer is the original `create_pretraining_data.py` algorithm as Google
wrote it, ported line for line in behaviour (`tests/tf1_reference.py`, the
tests' oracle too: Python `random`, the pure-Python FullTokenizer, the whole
corpus in RAM, per-token Python masking), writing the same tf.train.Example
records. Each configuration runs
in its own process so peak memory (max RSS, workers included) is its own.

    python bench/bench_pretraining_data.py [--dupe_factor=2] [--scales=1,4]
        [--format=array_record|tfrecord] [--corpus=embedded|wiki]

Prints instances/s, the speed-up over the peer and peak memory, for the
embedded corpus and for it repeated `scale` times (same documents again:
memory should not grow with it for bert_jax, and does for the peer).
`--corpus=wiki` reads the Wikipedia dump fragment of the tests instead
(markup removal and sentence splitting dominate; the peer converts the
articles in its one process with the same code).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the peer lives in tests/ (the tests' oracle too)
from tests import tf1_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
VOCAB = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
CORPUS = {
    "embedded": sorted(glob.glob(os.path.join(ROOT, "data/corpus/*.txt.gz"))),
    "wiki": [os.path.join(
        ROOT, "tests/testdata/pretraining/enwiki-fragment.xml.bz2")],
}

# -- the peer: TF1's algorithm, single process, everything in RAM ------------

def run_peer(files, out_path, dupe_factor, max_seq_length=128,
             max_predictions=20):
  from bert_jax import records  # pylint: disable=g-import-not-at-top
  from bert_jax import sources  # pylint: disable=g-import-not-at-top
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  tok = tokenization.FullTokenizer(VOCAB)
  rng = random.Random(12345)
  stats = sources.SourceStats()
  all_docs = [[tok.tokenize(s) for s in d]
              for d in sources.iter_all_documents(files, stats)]
  all_docs = [[s for s in d if s] for d in all_docs]
  all_docs = [d for d in all_docs if d]
  rng.shuffle(all_docs)
  vocab_words = list(tok.vocab.keys())
  finish = tf1_reference.truncate_and_mask(max_seq_length, 0.15,
                                           max_predictions, vocab_words, rng)
  instances = []
  for _ in range(dupe_factor):
    for i in range(len(all_docs)):
      instances.extend(tf1_reference.create_instances_from_document(
          all_docs, i, max_seq_length, 0.1, rng, finish=finish))
  rng.shuffle(instances)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(out_path) as w:  # TF1's writer
    for tokens, seg, is_random, pos, labels in instances:
      ids = tok.convert_tokens_to_ids(tokens)
      pad = max_seq_length - len(ids)
      w.write(records.serialize_example({
          "input_ids": np.array(ids + [0] * pad),
          "input_mask": np.array([1] * len(ids) + [0] * pad),
          "segment_ids": np.array(seg + [0] * pad),
          "masked_lm_positions": np.array(
              pos + [0] * (max_predictions - len(pos))),
          "masked_lm_ids": np.array(tok.convert_tokens_to_ids(labels)
                                    + [0] * (max_predictions - len(pos))),
          "masked_lm_weights": np.array([1.0] * len(pos) + [0.0] * (
              max_predictions - len(pos)), np.float32),
          "next_sentence_labels": np.array([int(is_random)]),
      }))
  return len(instances)


def run_ours(files, out_dir, dupe_factor, workers, fmt):
  from bert_jax import pretraining_data as pd  # pylint: disable=g-import-not-at-top
  m = pd.create_pretraining_data(
      ",".join(files), out_dir, VOCAB, opts=pd.DataOptions(
          dupe_factor=dupe_factor), num_workers=workers, num_shards=4,
      fmt=fmt)
  return m["train"]["instances"]


def _child(args):
  files = CORPUS[args.corpus] * args.scale
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    if args.which == "peer":
      n = run_peer(files, os.path.join(tmp, "peer.tfrecord"),
                   args.dupe_factor)
    else:
      n = run_ours(files, os.path.join(tmp, "ours"), args.dupe_factor,
                   args.workers, args.format)
    sec = time.perf_counter() - start
  rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
  print(json.dumps({"instances": n, "seconds": sec, "max_rss_mb": rss / 1024}))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dupe_factor", type=int, default=2)
  p.add_argument("--scales", default="1,4")
  p.add_argument("--corpus", default="embedded", choices=sorted(CORPUS))
  p.add_argument("--which", default="")
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--scale", type=int, default=1)
  # bert_jax's default; tfrecord adds TensorFlow's import (~5 s, ~500 MB)
  # to the main process, as it does to the peer.
  p.add_argument("--format", default="array_record")
  args = p.parse_args()
  if args.which:
    _child(args)
    return
  rows = []
  for scale in (int(s) for s in args.scales.split(",")):
    runs = [("peer (TF1, 1 process)", "peer", 1),
            (f"bert_jax, 1 worker, {args.format}", "ours", 1),
            (f"bert_jax, 2 workers, {args.format}", "ours", 2)]
    base = None
    for label, which, workers in runs:
      out = subprocess.run(
          [sys.executable, __file__, f"--which={which}",
           f"--workers={workers}", f"--scale={scale}",
           f"--dupe_factor={args.dupe_factor}", f"--format={args.format}",
           f"--corpus={args.corpus}"],
          capture_output=True,
          text=True, check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
      r = json.loads(out)
      rate = r["instances"] / r["seconds"]
      base = base or rate
      rows.append((scale, label, r["instances"], rate, rate / base,
                   r["max_rss_mb"]))
      print(f"{args.corpus} x{scale}  {label:36s} {r['instances']:8d} instances "
            f"{rate:9.0f}/s  {rate / base:5.2f}x  peak RSS "
            f"{r['max_rss_mb']:7.0f} MB", flush=True)


if __name__ == "__main__":
  main()
