"""Creates pre-training shards from text (the original script, streaming).

    python -m bert_jax.create_pretraining_data \
        --input_file='data/corpus/*.txt.gz' --output_dir=/tmp/pretrain \
        --vocab_file=data/vocab/bert-base-uncased-vocab.txt --do_lower_case \
        --max_seq_length=128 --max_predictions_per_seq=20 \
        --masked_lm_prob=0.15 --dupe_factor=10 --short_seq_prob=0.1 \
        --random_seed=12345 [--do_whole_word_mask] [--objective=mlm_nsp]
        [--mask_ratios=0.8,0.1,0.1] [--format=array_record] [--num_workers=2]

The main process reads documents (see `bert_jax.sources`); worker processes
split them into sentences (Wikipedia markup removal and pysbd are the
costliest step of all), the main process deals the results into groups, and
workers tokenise each group, create its instances (see
`bert_jax.pretraining_data`) and serialise them; the main process deals them
round-robin into `NAME-0000k-of-000NN.<format>` shards. Every shard is
written under a temporary name and renamed when complete; `manifest.json`
(counts, options, sha256 of every shard, the skip/repair summary) is written
last. Output depends on the seed, the inputs and `group_sentences`, not on
`num_workers`. With `--eval_fraction`, a deterministic share of documents
goes to separate `eval-*` shards (one masking pass), for held-out metrics.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from bert_jax import masking
from bert_jax import pretraining_data
from bert_jax import records
from bert_jax import sources
from bert_jax import tokenization

MANIFEST = "manifest.json"

_TOKENIZERS: dict[tuple[str, bool], Any] = {}


def _tokenizer(vocab_file: str, do_lower_case: bool):
  key = (vocab_file, do_lower_case)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = tokenization.create_tokenizer(vocab_file,
                                                     do_lower_case)
  return _TOKENIZERS[key]


def _varint(n: int) -> bytes:
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


_VARINTS = [_varint(n) for n in range(1 << 16)]  # at most 3 bytes each
_SHIFTS = np.arange(0, 35, 7, dtype=np.uint64)
# The same as arrays: bytes zero-padded to 3, and byte counts.
_VARINT_TABLE = np.frombuffer(b"".join(v.ljust(3, b"\0") for v in _VARINTS),
                              np.uint8).reshape(-1, 3)
_VARINT_LENGTHS = np.array([len(v) for v in _VARINTS], np.int64)


def _len_prefixed(tag: bytes, payload: bytes) -> bytes:
  n = len(payload)
  return tag + (_VARINTS[n] if n < len(_VARINTS) else _varint(n)) + payload


def _varint_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Protobuf varints of every value of int [N, M] (0 <= v < 2**35).

  Returns the bytes of all rows, concatenated (uint8), and each row's byte
  count.
  """
  top = int(a.max(initial=0))
  if top < 0x80:  # masks, segment ids, short positions: one byte each
    return a.astype(np.uint8).reshape(-1), np.full(len(a), a.shape[1])
  if top < len(_VARINT_TABLE):  # vocabulary ids: a table look-up
    nbytes = _VARINT_LENGTHS[a]
    return _gather(_VARINT_TABLE[a].reshape(-1), np.arange(a.size) * 3,
                   nbytes.reshape(-1)), nbytes.sum(1)
  width = (top.bit_length() + 6) // 7  # bytes of the longest varint
  shifts = _SHIFTS[:width].astype(np.uint32 if width <= 4 else np.uint64)
  v = a.astype(shifts.dtype)[..., None]
  groups = ((v >> shifts) & 0x7F).astype(np.uint8)
  nbytes = 1 + (v >= (shifts.dtype.type(1) << shifts[1:])).sum(
      -1, dtype=np.int64)
  groups[np.arange(width) < nbytes[..., None] - 1] |= 0x80
  return _gather(groups.reshape(-1), np.arange(nbytes.size) * width,
                 nbytes.reshape(-1)), nbytes.sum(1)


def _gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray
            ) -> np.ndarray:
  """source[starts[0]:starts[0] + lengths[0]] ++ ... for every segment.

  One fancy index over computed positions (a boolean mask instead is ~30%
  slower: its branches mispredict on mixed lengths).
  """
  lengths = lengths.astype(np.int64)
  out_starts = np.cumsum(lengths) - lengths
  index = (np.repeat(starts.astype(np.int64) - out_starts, lengths)
           + np.arange(int(lengths.sum())))
  return source[index]


def _table(keys: np.ndarray, make) -> tuple[np.ndarray, np.ndarray,
                                            np.ndarray]:
  """Bytes `make(key)` for each distinct key, as one buffer.

  Returns (buffer uint8, each row's start in it, each row's length).
  """
  distinct, inverse = np.unique(keys, return_inverse=True)
  pieces = [make(int(k)) for k in distinct]
  lengths = np.array([len(p) for p in pieces], np.int64)
  starts = np.cumsum(lengths) - lengths
  buffer = np.frombuffer(b"".join(pieces), np.uint8)
  return buffer, starts[inverse], lengths[inverse]


_BATCH = 4096  # records assembled at a time (bounds the index arrays)


def serialize_instances(instances: dict[str, np.ndarray]) -> list[bytes]:
  """`records.serialize_example` of each row of a batch, byte for byte.

  `instances` maps feature names to [N, ...] arrays. Writes the
  tf.train.Example wire format directly (map entries in key order, as
  deterministic serialisation does) with whole-batch array operations: each
  record is a concatenation of byte segments (headers that depend only on a
  byte count, and the values), gathered in one index operation. The workers
  never import TensorFlow (seconds and ~500 MB each).
  """
  names = sorted(instances)
  n = len(instances[names[0]]) if names else 0
  out: list[bytes] = []
  for lo in range(0, n, _BATCH):
    out.extend(_serialize_rows({k: np.asarray(v[lo:lo + _BATCH]).reshape(
        len(v[lo:lo + _BATCH]), -1) for k, v in instances.items()}, names))
  return out


def _serialize_rows(arrays: dict[str, np.ndarray], names: list[str]
                    ) -> list[bytes]:
  n = len(arrays[names[0]])
  buffers: list[np.ndarray] = []
  seg_starts: list[np.ndarray] = []  # per segment kind: [N] global starts
  seg_lengths: list[np.ndarray] = []
  base = 0

  def add(buffer, starts, lengths):
    nonlocal base
    buffers.append(buffer)
    seg_starts.append(starts + base)
    seg_lengths.append(np.broadcast_to(lengths, (n,)))
    base += len(buffer)

  body = np.zeros(n, np.int64)
  for name in names:
    a = arrays[name]
    if name in records.FLOAT_FEATURES or a.dtype.kind == "f":
      values = a.astype("<f4").view(np.uint8).reshape(-1)
      sizes = np.full(n, 4 * a.shape[1], np.int64)
      tag = b"\x12"  # Feature.float_list
    elif a.shape[1] and (a.min() < 0 or a.max() >= 1 << 35):
      return [records.serialize_example(
          {k: v[i] for k, v in arrays.items()}) for i in range(n)]
    else:
      values, sizes = _varint_rows(a)
      tag = b"\x1a"  # Feature.int64_list
    key = _len_prefixed(b"\x0a", name.encode())

    def header(size, key=key, tag=tag):
      # Everything before the values depends only on their byte count.
      inner = _len_prefixed(b"\x0a", bytes(size)) if size else b""
      entry = key + _len_prefixed(b"\x12", _len_prefixed(tag, inner))
      full = _len_prefixed(b"\x0a", entry)
      return full[:len(full) - size]

    h_buf, h_start, h_len = _table(sizes, header)
    add(h_buf, h_start, h_len)
    add(values, np.cumsum(sizes) - sizes, sizes)
    body += h_len + sizes
  o_buf, o_start, o_len = _table(body, lambda size: _len_prefixed(
      b"\x0a", bytes(size))[:-size or None])
  # Segment order within a record: outer header, then (header, values) per
  # feature.
  starts = np.stack([o_start + base] + seg_starts, axis=1)
  lengths = np.stack([o_len] + seg_lengths, axis=1)
  buffers.append(o_buf)
  blob = _gather(np.concatenate(buffers), starts.reshape(-1),
                 lengths.reshape(-1)).tobytes()
  ends = np.cumsum(lengths.sum(1)).tolist()
  return [blob[i:j] for i, j in zip([0] + ends[:-1], ends)]


_VOCAB_INFOS: dict[int, pretraining_data.VocabInfo] = {}


def _vocab_info(tok) -> pretraining_data.VocabInfo:
  # Built once a process: a pass over the whole vocabulary.
  if id(tok) not in _VOCAB_INFOS:
    _VOCAB_INFOS[id(tok)] = pretraining_data.VocabInfo.from_tokenizer(tok)
  return _VOCAB_INFOS[id(tok)]


def _init_worker() -> None:
  # One tokenizer thread a worker: the workers already fill the cores.
  os.environ["RAYON_NUM_THREADS"] = "1"


def _process_group(task: tuple) -> tuple[list[bytes], dict[str, int]]:
  """Worker: documents -> serialized instances (+ counts)."""
  docs, opts, vocab_file, do_lower_case, seed, dupe_factor = task
  tok = _tokenizer(vocab_file, do_lower_case)
  vocab = _vocab_info(tok)
  token_docs = pretraining_data.tokenize_documents(docs, tok)
  instances = pretraining_data.create_instances(
      token_docs, opts, vocab, seed, dupe_factor)
  counts = {
      "documents": len(token_docs),
      "instances": pretraining_data.num_instances(instances),
      "tokens": int(instances["input_mask"].sum()),
      "masked": int(instances["masked_lm_weights"].sum())
                if "masked_lm_weights" in instances else 0,
      "random_next": int(instances["next_sentence_labels"].sum())
                     if "next_sentence_labels" in instances else 0,
  }
  return serialize_instances(instances), counts


def _groups(docs: Iterator[list[str]], group_sentences: int
            ) -> Iterator[list[list[str]]]:
  group, n = [], 0
  for doc in docs:
    group.append(doc)
    n += len(doc)
    if n >= group_sentences:
      yield group
      group, n = [], 0
  if group:
    yield group


class _Done:
  """A result computed in this process, queued like an `AsyncResult`."""

  def __init__(self, value: Any):
    self._value = value

  def get(self) -> Any:
    return self._value


def _bounded_imap(pool, fn, tasks: Iterator[Any], max_in_flight: int,
                  local=lambda task: False) -> Iterator[Any]:
  """`pool.imap` with back-pressure, results in task order.

  `Pool.imap` feeds tasks from a thread and keeps finished results with no
  limit, so a corpus larger than RAM would be read in ahead of the workers.
  Here at most `max_in_flight` tasks exist at once: memory is bounded.
  Tasks for which `local(task)` holds run here (not worth the transfer).
  """
  pending = collections.deque()
  for task in tasks:
    pending.append(_Done(fn(task)) if local(task)
                   else pool.apply_async(fn, (task,)))
    if len(pending) >= max_in_flight:
      yield pending.popleft().get()
  while pending:
    yield pending.popleft().get()


_CHUNK_DOCUMENTS = 64
_CHUNK_CHARS = 1 << 18


def _raw_chunks(raw: Iterator[sources.RawDocument]
                ) -> Iterator[list[sources.RawDocument]]:
  chunk, chars = [], 0
  for doc in raw:
    chunk.append(doc)
    chars += (len(doc.content) if isinstance(doc.content, str)
              else sum(map(len, doc.content)))
    if len(chunk) >= _CHUNK_DOCUMENTS or chars >= _CHUNK_CHARS:
      yield chunk
      chunk, chars = [], 0
  if chunk:
    yield chunk


def _convert_chunk(chunk: list[sources.RawDocument]
                   ) -> list[list[str] | None]:
  """Worker: markup removal and sentence splitting of a few documents."""
  return [sources.to_sentences(raw) for raw in chunk]


def _documents(raw: Iterator[sources.RawDocument], stats: sources.SourceStats,
               pool, num_workers: int) -> Iterator[list[str]]:
  """Sentence-split documents in input order; the splitting runs in the
  workers (Wikipedia articles and raw paragraphs cost ~0.2 s each)."""
  if pool is None:
    converted = map(sources.to_sentences, raw)
  else:
    chunks = _bounded_imap(
        pool, _convert_chunk, _raw_chunks(raw), 2 * num_workers,
        local=lambda chunk: all(d.kind == "sentences" for d in chunk))
    converted = (doc for chunk in chunks for doc in chunk)
  for doc in converted:
    if sources.counted(doc, stats):
      yield doc


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _write_split(groups: Iterator[list[list[str]]], split: str,
                 num_shards: int, output_dir: str, fmt: str,
                 opts: pretraining_data.DataOptions, vocab_file: str,
                 do_lower_case: bool, seed: int, dupe_factor: int,
                 pool, num_workers: int) -> dict[str, Any]:
  """Writes one split's shards; returns its manifest section."""
  paths = [os.path.join(output_dir, records.shard_filename(
      split, i, num_shards, fmt)) for i in range(num_shards)]
  counts = {"documents": 0, "instances": 0, "tokens": 0, "masked": 0,
            "random_next": 0}
  per_shard = [0] * num_shards
  tasks = ((g, opts, vocab_file, do_lower_case,
            # Each group's randomness depends on (seed, split, index) only.
            int.from_bytes(hashlib.sha256(
                f"{seed}/{split}/{k}".encode()).digest()[:8], "little"),
            dupe_factor) for k, g in enumerate(groups))
  # Two groups a worker: one being made, one queued (workers never idle).
  results = (_bounded_imap(pool, _process_group, tasks, 2 * num_workers)
             if pool is not None else map(_process_group, tasks))
  start = last_log = time.time()
  k = 0
  with contextlib.ExitStack() as stack:
    writers = [stack.enter_context(records.RecordWriter(p, fmt))
               for p in paths]
    for serialized, c in results:
      for rec in serialized:
        writers[k % num_shards].write(rec)
        per_shard[k % num_shards] += 1
        k += 1
      for key in counts:
        counts[key] += c[key]
      now = time.time()
      if now - last_log > 10:
        last_log = now
        elapsed = max(now - start, 1e-9)
        logging.info("%s: %d documents (%.0f/s), %d instances (%.0f/s)",
                     split, counts["documents"],
                     counts["documents"] / elapsed, counts["instances"],
                     counts["instances"] / elapsed)
    if counts["instances"] == 0:
      raise ValueError(f"no {split} instances could be made: the input has "
                       "no usable text")
  logging.info("%s: %d documents, %d instances in %.1f s", split,
               counts["documents"], counts["instances"], time.time() - start)
  return {
      "shards": [{"file": os.path.basename(p), "records": n,
                  "sha256": _sha256(p)} for p, n in zip(paths, per_shard)],
      **counts,
  }


def create_pretraining_data(
    input_file: str, output_dir: str, vocab_file: str,
    do_lower_case: bool = True, *, opts: pretraining_data.DataOptions,
    random_seed: int = 12345, fmt: str = "array_record",
    num_workers: int = 1, num_shards: int = 4, eval_fraction: float = 0.0,
    input_format: str = "auto", tfds_data_dir: str | None = None,
    group_sentences: int = 5000, name: str = "train") -> dict[str, Any]:
  """Makes the shards and the manifest; returns the manifest."""
  if fmt not in ("array_record", "tfrecord"):
    raise ValueError(f"--format={fmt!r}: expected array_record or tfrecord")
  if not 0 <= eval_fraction < 1:
    raise ValueError(f"--eval_fraction={eval_fraction}: must be in [0, 1)")
  if num_shards < 1 or num_workers < 1:
    raise ValueError("--num_shards and --num_workers must be >= 1")
  tok = _tokenizer(vocab_file, do_lower_case)  # a bad vocab fails here
  inputs = sources.expand_inputs(input_file)
  if os.path.exists(os.path.join(output_dir, MANIFEST)):
    raise FileExistsError(f"{output_dir} already holds {MANIFEST}; choose "
                          "another --output_dir (nothing was overwritten)")
  os.makedirs(output_dir, exist_ok=True)
  if not os.access(output_dir, os.W_OK):
    raise PermissionError(f"--output_dir={output_dir} is not writable")

  stats = sources.SourceStats()
  split_rng = random.Random(f"{random_seed}/eval-split")
  eval_docs: list[list[str]] = []

  def train_stream(pool) -> Iterator[list[str]]:
    # The eval share is small: collect it while streaming the train split.
    raw = (doc for path in inputs for doc in sources.iter_raw_documents(
        path, stats, input_format, tfds_data_dir))
    for doc in _documents(raw, stats, pool, num_workers):
      if split_rng.random() < eval_fraction:
        eval_docs.append(doc)
      else:
        yield doc

  start = time.time()
  ctx = multiprocessing.get_context("spawn")
  manifest: dict[str, Any] = {}
  with (ctx.Pool(num_workers, initializer=_init_worker) if num_workers > 1
        else contextlib.nullcontext()) as pool:
    manifest[name] = _write_split(
        _groups(train_stream(pool), group_sentences), name, num_shards,
        output_dir, fmt, opts, vocab_file, do_lower_case, random_seed,
        opts.dupe_factor, pool, num_workers)
    if eval_fraction > 0:
      if not eval_docs:
        raise ValueError(f"--eval_fraction={eval_fraction} selected no "
                         "documents; raise it or add documents")
      manifest["eval"] = _write_split(
          _groups(iter(eval_docs), group_sentences), "eval", 1, output_dir,
          fmt, opts, vocab_file, do_lower_case, random_seed, 1, pool,
          num_workers)
  elapsed = time.time() - start
  vocab = _vocab_info(tok)
  manifest.update({
      "format": fmt,
      "options": {
          "objective": opts.objective,
          "max_seq_length": opts.max_seq_length,
          "max_predictions_per_seq": opts.max_predictions_per_seq,
          "masked_lm_prob": opts.masked_lm_prob,
          "short_seq_prob": opts.short_seq_prob,
          "dupe_factor": opts.dupe_factor,
          "mask_ratios": list(opts.mask_ratios),
          "do_whole_word_mask": opts.whole_word_mask,
          "masking": ("none" if opts.objective == "ltr" else
                      "dynamic" if opts.dynamic_masking else "static"),
          "random_seed": random_seed,
          "do_lower_case": do_lower_case,
          "group_sentences": group_sentences,
          "eval_fraction": eval_fraction,
      },
      "vocab": {"file": os.path.abspath(vocab_file),
                "sha256": _sha256(vocab_file), "size": vocab.vocab_size,
                "cls_id": vocab.cls_id, "sep_id": vocab.sep_id,
                "mask_id": vocab.mask_id, "pad_id": vocab.pad_id},
      "inputs": inputs,
      "source_stats": stats.as_dict(),
      "seconds": round(elapsed, 2),
  })
  tmp = os.path.join(output_dir, MANIFEST + ".incomplete")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(output_dir, MANIFEST))
  return manifest


def parse_mask_ratios(spec: str) -> tuple[float, float, float]:
  try:
    return masking.check_mask_ratios(float(x) for x in spec.split(","))
  except ValueError as e:
    raise ValueError(f"--mask_ratios={spec!r}: expected three non-negative "
                     "numbers MASK,SAME,RND summing to 1") from e


def define_flags() -> None:
  """CLI flags; defined only when run as a program (no import side effects)."""
  d = flags
  d.DEFINE_string("input_file", None, "Comma-separated globs, or tfds:NAME.")
  d.DEFINE_string("output_dir", None, "Directory for shards + manifest.")
  d.DEFINE_string("vocab_file", None, "vocab.txt or a sentencepiece .model.")
  d.DEFINE_boolean("do_lower_case", True, "Lower-case the input.")
  d.DEFINE_integer("max_seq_length", 128, "Tokens per instance.")
  d.DEFINE_integer("max_predictions_per_seq", 20, "Masked LM predictions.")
  d.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens masked.")
  d.DEFINE_integer("dupe_factor", 10, "Passes over the data (new masks).")
  d.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target.")
  d.DEFINE_integer("random_seed", 12345, "Seed.")
  d.DEFINE_boolean("do_whole_word_mask", False, "Mask whole words.")
  d.DEFINE_enum("objective", "mlm_nsp", list(pretraining_data.OBJECTIVES),
                "mlm_nsp (BERT), mlm (No NSP) or ltr (left-to-right).")
  d.DEFINE_string("mask_ratios", "0.8,0.1,0.1",
                  "MASK,SAME,RND probabilities (the paper's Table 8).")
  d.DEFINE_boolean("dynamic_masking", False,
                   "Store unmasked; mask in the input pipeline.")
  d.DEFINE_enum("format", "array_record", ["array_record", "tfrecord"],
                "Shard format.")
  d.DEFINE_integer("num_workers", 1, "Worker processes.")
  d.DEFINE_integer("num_shards", 4, "Output shards.")
  d.DEFINE_float("eval_fraction", 0.0, "Share of documents held out.")
  d.DEFINE_enum("input_format", "auto", list(sources.FORMATS),
                "How to read the inputs (auto: by file name).")
  d.DEFINE_string("tfds_data_dir", None, "data_dir of tfds: inputs.")
  d.DEFINE_integer("group_sentences", 5000,
                   "Sentences per work unit (the random-next pool).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  for name in ("input_file", "output_dir", "vocab_file"):
    if not f[name].value:
      raise app.UsageError(f"--{name} is required")
  try:
    m = _run_from_flags(f)
  except (ValueError, OSError) as e:
    # Bad input or flags: one line naming the file or flag, no traceback;
    # no shard was left looking complete.
    sys.exit(f"error: {e}")
  s = m["source_stats"]
  print(f"{m['train']['instances']} instances in "
        f"{len(m['train']['shards'])} shards"
        + (f", {m['eval']['instances']} eval instances" if "eval" in m
           else "")
        + f" from {s['documents']} documents in {m['seconds']} s; "
        f"repaired lines {s['repaired_lines']}, skipped: binary files "
        f"{s['skipped_binary_files']}, long lines {s['skipped_long_lines']}, "
        f"empty documents {s['skipped_empty_documents']}, unparsable "
        f"documents {s['unparsable_documents']}; truncated files "
        f"{s['truncated_files']}")


def _run_from_flags(f) -> dict[str, Any]:
  opts = pretraining_data.DataOptions(
      max_seq_length=f.max_seq_length,
      max_predictions_per_seq=f.max_predictions_per_seq,
      masked_lm_prob=f.masked_lm_prob, short_seq_prob=f.short_seq_prob,
      dupe_factor=f.dupe_factor, objective=f.objective,
      mask_ratios=parse_mask_ratios(f.mask_ratios),
      whole_word_mask=f.do_whole_word_mask,
      dynamic_masking=f.dynamic_masking)
  return create_pretraining_data(
      f.input_file, f.output_dir, f.vocab_file, f.do_lower_case, opts=opts,
      random_seed=f.random_seed, fmt=f.format, num_workers=f.num_workers,
      num_shards=f.num_shards, eval_fraction=f.eval_fraction,
      input_format=f.input_format, tfds_data_dir=f.tfds_data_dir,
      group_sentences=f.group_sentences)


if __name__ == "__main__":
  define_flags()
  app.run(main)
