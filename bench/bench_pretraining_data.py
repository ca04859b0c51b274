"""Example creation: bert_jax against a faithful single-process TF1 run.

The peer is the original `create_pretraining_data.py` algorithm as Google
wrote it, ported here line for line in behaviour (Python `random`, the
pure-Python FullTokenizer, the whole corpus in RAM, per-token Python
masking), writing the same tf.train.Example records. Each configuration runs
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
import collections
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
VOCAB = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
CORPUS = {
    "embedded": sorted(glob.glob(os.path.join(ROOT, "data/corpus/*.txt.gz"))),
    "wiki": [os.path.join(
        ROOT, "tests/testdata/pretraining/enwiki-fragment.xml.bz2")],
}

MaskedLm = collections.namedtuple("MaskedLm", ["index", "label"])


# -- the peer: TF1's algorithm, single process, everything in RAM ------------

def _tf1_truncate(tokens_a, tokens_b, max_num_tokens, rng):
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del trunc[0]
    else:
      trunc.pop()


def _tf1_mask(tokens, masked_lm_prob, max_predictions, vocab_words, rng):
  cand = [[i] for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
  rng.shuffle(cand)
  output = list(tokens)
  num_to_predict = min(max_predictions,
                       max(1, int(round(len(tokens) * masked_lm_prob))))
  masked, covered = [], set()
  for index_set in cand:
    if len(masked) >= num_to_predict:
      break
    if len(masked) + len(index_set) > num_to_predict:
      continue
    for index in index_set:
      covered.add(index)
      if rng.random() < 0.8:
        new = "[MASK]"
      elif rng.random() < 0.5:
        new = tokens[index]
      else:
        new = vocab_words[rng.randint(0, len(vocab_words) - 1)]
      output[index] = new
      masked.append(MaskedLm(index, tokens[index]))
  masked.sort(key=lambda x: x.index)
  return output, [m.index for m in masked], [m.label for m in masked]


def _tf1_instances(all_docs, doc_index, max_seq_length, short_seq_prob,
                   masked_lm_prob, max_predictions, vocab_words, rng):
  document = all_docs[doc_index]
  max_num_tokens = max_seq_length - 3
  target = max_num_tokens
  if rng.random() < short_seq_prob:
    target = rng.randint(2, max_num_tokens)
  out, chunk, length, i = [], [], 0, 0
  while i < len(document):
    chunk.append(document[i])
    length += len(document[i])
    if i == len(document) - 1 or length >= target:
      if chunk:
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        tokens_a = [t for s in chunk[:a_end] for t in s]
        tokens_b = []
        if len(chunk) == 1 or rng.random() < 0.5:
          is_random = True
          target_b = target - len(tokens_a)
          for _ in range(10):
            r = rng.randint(0, len(all_docs) - 1)
            if r != doc_index:
              break
          rdoc = all_docs[r]
          for j in range(rng.randint(0, len(rdoc) - 1), len(rdoc)):
            tokens_b.extend(rdoc[j])
            if len(tokens_b) >= target_b:
              break
          i -= len(chunk) - a_end
        else:
          is_random = False
          tokens_b = [t for s in chunk[a_end:] for t in s]
        _tf1_truncate(tokens_a, tokens_b, max_num_tokens, rng)
        tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
        seg = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        tokens, pos, labels = _tf1_mask(tokens, masked_lm_prob,
                                        max_predictions, vocab_words, rng)
        out.append((tokens, seg, is_random, pos, labels))
      chunk, length = [], 0
    i += 1
  return out


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
  instances = []
  for _ in range(dupe_factor):
    for i in range(len(all_docs)):
      instances.extend(_tf1_instances(all_docs, i, max_seq_length, 0.1, 0.15,
                                      max_predictions, vocab_words, rng))
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
  from bert_jax import create_pretraining_data as cpd  # pylint: disable=g-import-not-at-top
  from bert_jax import pretraining_data as pd  # pylint: disable=g-import-not-at-top
  m = cpd.create_pretraining_data(
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
