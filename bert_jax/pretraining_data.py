"""Pre-training instances from tokenised documents (TF1's algorithm).

Objectives:
- `mlm_nsp`: google-research/bert `create_instances_from_document`: a target
  length (max_seq_length - 3, or with probability short_seq_prob a random
  length in [2, max]); sentences accumulate into a chunk up to the target; a
  random split makes segment A; with probability 0.5, or always when the
  chunk has one sentence, segment B is drawn from a random other document
  and the unused sentences are put back; else B is the rest of the chunk.
  The pair is truncated from the front or the back (50/50) of the longer
  segment. Label 1 = B is random (TF1's convention).
- `mlm`: the paper's No-NSP ablation. One segment of contiguous text from one
  document, up to the target length, masked; next_sentence_labels is 0.
- `ltr`: the left-to-right ablation. Contiguous text, no masking; targets
  are the next tokens (the loss derives them from input_ids).

Streaming, bounded memory. TF1 holds every document in RAM and draws a
random-next document from all of them. Here documents arrive in groups
(`group_sentences` sentences, hundreds of documents); a group is processed
on its own, its random-next documents drawn from the group. Since B only
needs to come from *another* document, the statistics are unchanged (the
tests compare the NSP fraction and lengths with the all-in-RAM algorithm);
what differs is that B cannot come from a document in another group.
Documents and instances are shuffled within their group (TF1 shuffles both
over the whole corpus); the input pipeline shuffles globally at training
time. The group size, not the number of workers, is what the output depends
on: the same seed, inputs and `group_sentences` give the same records.

Speed. TF1 builds every instance as Python lists of tokens. Here the
per-document loop runs on sentence offsets only (`nsp_spans`: each instance
is a start and a length in the group's token stream for A and for B, found
by bisection, with TF1's random draws in TF1's order); truncation is a
closed form plus a binomial draw per segment, and the rows are assembled,
shuffled and masked for the whole group with array operations.

A data directory. `create_pretraining_data` (the library behind
`python -m bert_jax.create_pretraining_data` and the trainer's data step):
the main process reads documents (see `bert_jax.sources`); worker processes
split them into sentences (Wikipedia markup removal and pysbd are the
costliest step of all), the main process deals the results into groups, and
workers tokenise each group, create its instances and serialise them
(`records.serialize_instances`); the main process deals them round-robin
into `NAME-0000k-of-000NN.<format>` shards. Every shard is written under a
temporary name and renamed when complete; the manifest (`bert_jax.manifest`:
counts, options, sha256 of every shard, the skip/repair summary) is written
last. Output depends on the seed, the inputs and `group_sentences`, not on
`num_workers`. With `eval_fraction`, a deterministic share of documents goes
to separate `eval-*` shards (one masking pass), for held-out metrics. The
held-out split is always masked the standard way (`EVAL_MASK_RATIOS`,
80/10/10), whatever `mask_ratios` the training split uses: with the same
seed and inputs, every Table 8 variant gets the same held-out examples with
the same masks, so their held-out MLM figures compare row to row.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

from absl import logging
import numpy as np

from bert_jax import manifest as manifest_lib
from bert_jax import masking
from bert_jax import records
from bert_jax import sources
from bert_jax import tokenization

OBJECTIVES = ("mlm_nsp", "mlm", "ltr")

# How every held-out split is masked (MASK, SAME, RND): the paper's standard,
# not the run's Table 8 variant, so held-out MLM metrics compare across rows.
EVAL_MASK_RATIOS = masking.DEFAULT_MASK_RATIOS


@dataclasses.dataclass(frozen=True)
class DataOptions:
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  dupe_factor: int = 10
  objective: str = "mlm_nsp"
  mask_ratios: tuple[float, float, float] = masking.DEFAULT_MASK_RATIOS
  whole_word_mask: bool = False
  dynamic_masking: bool = False

  def __post_init__(self):
    if self.objective not in OBJECTIVES:
      raise ValueError(f"--objective={self.objective!r}: expected one of "
                       f"{OBJECTIVES}")
    if self.max_seq_length < 5:
      raise ValueError(f"--max_seq_length={self.max_seq_length}: too short "
                       "(needs [CLS] A [SEP] B [SEP])")
    if not 0 < self.masked_lm_prob < 1:
      raise ValueError(f"--masked_lm_prob={self.masked_lm_prob}: must be in "
                       "(0, 1)")
    if not 0 <= self.short_seq_prob <= 1:
      raise ValueError(f"--short_seq_prob={self.short_seq_prob}: must be in "
                       "[0, 1]")
    if self.dupe_factor < 1:
      raise ValueError(f"--dupe_factor={self.dupe_factor}: must be >= 1")
    if self.max_predictions_per_seq < 1:
      raise ValueError("--max_predictions_per_seq must be >= 1")
    masking.check_mask_ratios(self.mask_ratios)

  @property
  def masked(self) -> bool:
    return self.objective != "ltr" and not self.dynamic_masking


@dataclasses.dataclass(frozen=True)
class VocabInfo:
  cls_id: int
  sep_id: int
  mask_id: int
  pad_id: int
  vocab_size: int
  continuation: np.ndarray  # bool [vocab_size]: piece continues a word

  @classmethod
  def from_tokenizer(cls, tok) -> "VocabInfo":
    size = tok.vocab_size
    v = tok.vocab
    # The tokenizer's own (cached) table, not a second walk of the vocab.
    return cls(v["[CLS]"], v["[SEP]"], v["[MASK]"], v.get("[PAD]", 0), size,
               tok.continuation_mask(np.arange(size)))

  @property
  def special_ids(self) -> tuple[int, int, int]:
    return (self.cls_id, self.sep_id, self.pad_id)


Instances = dict[str, np.ndarray]  # every feature with a leading [N] axis
TokenDoc = list[np.ndarray]  # one int32 array of ids per sentence


def truncated_lengths(len_a: np.ndarray, len_b: np.ndarray, max_tokens: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Tokens TF1's truncation loop removes from A and from B, in closed form.

  The loop drops one token at a time from the longer segment (B on a tie)
  until the pair fits: the longer one comes down to the shorter, then B and
  A alternate, B first.
  """
  len_a = np.asarray(len_a, np.int64)
  len_b = np.asarray(len_b, np.int64)
  excess = np.maximum(len_a + len_b - max_tokens, 0)
  gap = np.minimum(np.abs(len_a - len_b), excess)
  rest = excess - gap
  cut_a = np.where(len_a > len_b, gap, 0) + rest // 2
  cut_b = np.where(len_a > len_b, 0, gap) + rest - rest // 2
  return cut_a, cut_b


class Spans:
  """Each instance as (start, length) ranges of a group's token stream."""

  def __init__(self):
    self.a_start, self.a_len, self.b_start, self.b_len = [], [], [], []
    self.label = []

  def add(self, a_start, a_len, b_start, b_len, label):
    self.a_start.append(a_start)
    self.a_len.append(a_len)
    self.b_start.append(b_start)
    self.b_len.append(b_len)
    self.label.append(label)

  def arrays(self) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(x, np.int64) for x in (
        self.a_start, self.a_len, self.b_start, self.b_len, self.label))


def _target_length(max_tokens: int, opts: DataOptions,
                   rng: random.Random) -> int:
  if rng.random() < opts.short_seq_prob:
    return rng.randint(2, max_tokens)
  return max_tokens


def nsp_spans(bounds: Sequence[Sequence[int]], doc_index: int,
              opts: DataOptions, rng: random.Random, out: Spans) -> None:
  """TF1's `create_instances_from_document` for one document, on offsets.

  `bounds[d]` holds the token offsets of document d's sentence boundaries
  (n + 1 of them for n sentences) in the group's token stream; every other
  document is the random-next pool. Instances are recorded untruncated.
  """
  cum = bounds[doc_index]
  n = len(cum) - 1
  target = _target_length(opts.max_seq_length - 3, opts, rng)
  s = 0  # first sentence of the chunk
  while s < n:
    # The chunk grows a sentence at a time until it reaches the target or
    # the document ends: sentences s..j.
    j = min(bisect.bisect_left(cum, cum[s] + target, s + 1), n) - 1
    size = j - s + 1
    a_end = s + (rng.randint(1, size - 1) if size >= 2 else 1)
    a_len = cum[a_end] - cum[s]
    if size == 1 or rng.random() < 0.5:
      for _ in range(10):
        r = rng.randint(0, len(bounds) - 1)
        if r != doc_index:
          break
      other = bounds[r]
      first = rng.randint(0, len(other) - 2)
      # Sentences from `first` until B reaches the rest of the target (at
      # least one).
      last = min(bisect.bisect_left(other, other[first] + target - a_len,
                                    first + 1), len(other) - 1)
      out.add(cum[s], a_len, other[first], other[last] - other[first], 1)
      s = a_end  # the unused sentences go back for the next chunk
    else:
      out.add(cum[s], a_len, cum[a_end], cum[j + 1] - cum[a_end], 0)
      s = j + 1


def contiguous_spans(cum: Sequence[int], opts: DataOptions,
                     rng: random.Random, out: Spans) -> None:
  """`mlm` / `ltr`: consecutive pieces of one document's token stream."""
  max_tokens = opts.max_seq_length - 2
  start, end = cum[0], cum[-1]
  first = True
  while start < end:
    target = _target_length(max_tokens, opts, rng)
    length = min(target, end - start)
    if length < 2 and not first:
      break  # a lone trailing token makes no example
    out.add(start, length, start, 0, 0)
    start += target
    first = False


def flatten_documents(docs: Sequence[TokenDoc]
             ) -> tuple[np.ndarray, list[list[int]]]:
  """The group's token stream and each document's sentence offsets."""
  lengths = [len(s) for d in docs for s in d]
  ends = np.cumsum(lengths).tolist()
  bounds, k = [], 0
  for d in docs:
    bounds.append([ends[k - 1] if k else 0] + ends[k:k + len(d)])
    k += len(d)
  tokens = (np.concatenate([s for d in docs for s in d]).astype(np.int32)
            if lengths else np.zeros(0, np.int32))
  return tokens, bounds


def build_instances(tokens: np.ndarray, spans: Spans, opts: DataOptions,
                    vocab: VocabInfo, np_rng: np.random.Generator
                    ) -> Instances:
  """[CLS] A [SEP] (B [SEP]) rows from spans, truncated as TF1 does.

  A pair whose length exceeds max_seq_length - 3 loses tokens from the
  longer segment, each from its front or its back with probability 1/2:
  the number taken from the front is Binomial(cut, 1/2), as in TF1's loop.
  """
  a_start, a_len, b_start, b_len, label = spans.arrays()
  pair = opts.objective == "mlm_nsp"
  if pair:
    cut_a, cut_b = truncated_lengths(a_len, b_len, opts.max_seq_length - 3)
    a_start = a_start + np_rng.binomial(cut_a, 0.5)
    b_start = b_start + np_rng.binomial(cut_b, 0.5)
    a_len, b_len = a_len - cut_a, b_len - cut_b
    keep = (a_len > 0) & (b_len > 0)
    a_start, a_len, b_start, b_len, label = (
        x[keep] for x in (a_start, a_len, b_start, b_len, label))
  pos_L = np.arange(opts.max_seq_length)
  a_end = a_len[:, None] + 1  # A at [1, a_end), then [SEP]
  b_begin = a_end + 1
  b_end = b_begin + b_len[:, None]  # B at [b_begin, b_end), then [SEP]
  num_tokens = (a_len + 2 + (b_len + 1 if pair else 0))[:, None]
  in_a = (pos_L >= 1) & (pos_L < a_end)
  in_b = (pos_L >= b_begin) & (pos_L < b_end) if pair else False
  src = np.where(in_a, a_start[:, None] + pos_L - 1,
                 b_start[:, None] + pos_L - b_begin)
  ids = np.where(in_a | in_b,
                 tokens[np.clip(src, 0, max(len(tokens) - 1, 0))], 0)
  rows = np.arange(len(ids))
  ids[:, 0] = vocab.cls_id
  ids[rows, a_end[:, 0]] = vocab.sep_id
  if pair:
    ids[rows, b_end[:, 0]] = vocab.sep_id
  input_mask = pos_L < num_tokens
  out = {"input_ids": ids.astype(np.int32),
         "input_mask": input_mask.astype(np.int32),
         "segment_ids": ((pos_L >= b_begin) & input_mask).astype(np.int32)
                        if pair else np.zeros_like(ids, np.int32)}
  if opts.objective != "ltr":
    out["next_sentence_labels"] = label.astype(np.int32)[:, None]
  return out


def create_instances(docs: Sequence[TokenDoc], opts: DataOptions,
                     vocab: VocabInfo, seed: int,
                     dupe_factor: int | None = None) -> Instances:
  """All instances of a group of documents, over dupe_factor passes.

  The per-document algorithm runs on sentence offsets only; the rows are
  then built, shuffled and masked with whole-group array operations.
  """
  rng = random.Random(seed)
  np_rng = np.random.default_rng(seed)
  docs = [d for d in docs if d]
  rng.shuffle(docs)  # as TF1 does before its passes
  tokens, bounds = flatten_documents(docs)
  spans = Spans()
  for _ in range(opts.dupe_factor if dupe_factor is None else dupe_factor):
    for index in range(len(docs)):
      if opts.objective == "mlm_nsp":
        nsp_spans(bounds, index, opts, rng, spans)
      else:
        contiguous_spans(bounds[index], opts, rng, spans)
  out = build_instances(tokens, spans, opts, vocab, np_rng)
  order = np_rng.permutation(len(out["input_ids"]))
  out = {k: v[order] for k, v in out.items()}
  if opts.dynamic_masking and opts.objective != "ltr":
    out["word_start"] = (~vocab.continuation[out["input_ids"]]
                         & (out["input_mask"] > 0)).astype(np.int32)
  elif opts.masked:
    out["input_ids"], *predictions = masking.create_masked_lm_predictions_batch(
        out["input_ids"], out["input_mask"].sum(1), np_rng,
        special_ids=vocab.special_ids, vocab_size=vocab.vocab_size,
        mask_id=vocab.mask_id, masked_lm_prob=opts.masked_lm_prob,
        max_predictions_per_seq=opts.max_predictions_per_seq,
        mask_ratios=opts.mask_ratios,
        word_start=(~vocab.continuation[out["input_ids"]]
                    if opts.whole_word_mask else None))
    for name, value in zip(("masked_lm_positions", "masked_lm_ids",
                            "masked_lm_weights"), predictions):
      out[name] = value
  return out


def num_instances(instances: Instances) -> int:
  return len(instances["input_ids"])


def unbatch(instances: Instances) -> list[dict[str, np.ndarray]]:
  """One dict of arrays per instance (for inspection and tests)."""
  return [{k: v[i] for k, v in instances.items()}
          for i in range(num_instances(instances))]


def tokenize_documents(docs: Sequence[Sequence[str]], tokenizer
                       ) -> list[TokenDoc]:
  """Token ids of every sentence, through the tokenizer's batch path."""
  flat = [s for d in docs for s in d]
  ids = tokenizer.encode_batch(flat)
  out: list[TokenDoc] = []
  k = 0
  for d in docs:
    sentences = [np.asarray(x, np.int32) for x in ids[k:k + len(d)]]
    k += len(d)
    # A sentence with no tokens (e.g. only control characters) is no
    # sentence; a document left empty is dropped later.
    out.append([s for s in sentences if s.size])
  return out


# -- a data directory from text, in worker processes -------------------------

_TOKENIZERS: dict[tuple[str, bool], Any] = {}


def _tokenizer(vocab_file: str, do_lower_case: bool):
  key = (vocab_file, do_lower_case)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = tokenization.create_tokenizer(vocab_file,
                                                     do_lower_case)
  return _TOKENIZERS[key]


_VOCAB_INFOS: dict[int, VocabInfo] = {}


def _vocab_info(tok) -> VocabInfo:
  # Once a process, not once a group.
  if id(tok) not in _VOCAB_INFOS:
    _VOCAB_INFOS[id(tok)] = VocabInfo.from_tokenizer(tok)
  return _VOCAB_INFOS[id(tok)]


def _init_worker() -> None:
  # One tokenizer thread a worker: the workers already fill the cores.
  os.environ["RAYON_NUM_THREADS"] = "1"


def _process_group(task: tuple) -> tuple[list[bytes], dict[str, int]]:
  """Worker: documents -> serialized instances (+ counts)."""
  docs, opts, vocab_file, do_lower_case, seed, dupe_factor = task
  tok = _tokenizer(vocab_file, do_lower_case)
  vocab = _vocab_info(tok)
  token_docs = tokenize_documents(docs, tok)
  instances = create_instances(
      token_docs, opts, vocab, seed, dupe_factor)
  counts = {
      "documents": len(token_docs),
      "instances": num_instances(instances),
      "tokens": int(instances["input_mask"].sum()),
      "masked": int(instances["masked_lm_weights"].sum())
                if "masked_lm_weights" in instances else 0,
      "random_next": int(instances["next_sentence_labels"].sum())
                     if "next_sentence_labels" in instances else 0,
  }
  return records.serialize_instances(instances), counts


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


def _write_split(groups: Iterator[list[list[str]]], split: str,
                 num_shards: int, output_dir: str, fmt: str,
                 opts: DataOptions, vocab_file: str,
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
                  "sha256": manifest_lib.sha256(p)} for p, n in zip(paths, per_shard)],
      **counts,
  }


def create_pretraining_data(
    input_file: str, output_dir: str, vocab_file: str,
    do_lower_case: bool = True, *, opts: DataOptions,
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
  if os.path.exists(os.path.join(output_dir, manifest_lib.FILENAME)):
    raise FileExistsError(f"{output_dir} already holds "
                          f"{manifest_lib.FILENAME}; choose another "
                          "--output_dir (nothing was overwritten)")
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
      # The masks draw the same numbers whatever the ratios, so the same
      # seed gives every variant the same held-out masks.
      manifest["eval"] = _write_split(
          _groups(iter(eval_docs), group_sentences), "eval", 1, output_dir,
          fmt, dataclasses.replace(opts, mask_ratios=EVAL_MASK_RATIOS),
          vocab_file, do_lower_case, random_seed, 1, pool, num_workers)
  elapsed = time.time() - start
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
          "eval_mask_ratios": list(EVAL_MASK_RATIOS),
          "do_whole_word_mask": opts.whole_word_mask,
          "masking": ("none" if opts.objective == "ltr" else
                      "dynamic" if opts.dynamic_masking else "static"),
          "random_seed": random_seed,
          "do_lower_case": do_lower_case,
          "group_sentences": group_sentences,
          "eval_fraction": eval_fraction,
      },
      "vocab": manifest_lib.vocab_section(vocab_file, tok),
      "inputs": inputs,
      "source_stats": stats.as_dict(),
      "seconds": round(elapsed, 2),
  })
  manifest_lib.write(output_dir, manifest)
  return manifest
