"""What every fine-tuning task shares: the starting encoder and the batches.

- `load_encoder(config)`: the encoder named by `config.init_checkpoint`, in
  any format `bert_jax.pretrained` reads (bert_jax, Hugging Face, Google's
  TF1, or a pre-training workdir), with the job's dropout / dtype / layer
  settings; causal (left-to-right) checkpoints stay causal. With no
  checkpoint the encoder is freshly initialised from `config.model.preset`
  (for ablations that start from scratch).
- `FeatureBatches`: an in-memory grain dataset of feature arrays (every
  fine-tuning set fits in host memory). Training: a stream of shuffled
  epochs, batch s a function of (seed, s), so a resumed run sees exactly
  the batches it would have seen; TF1's step count int(N * epochs / B)
  (or `num_steps`, for tasks that count steps from examples, not features).
  Evaluation: every example exactly once, in length order, the last batch
  padded with rows of `example_index` -1 (which metrics drop). Each batch
  is cut to its longest row, rounded up to `pad_to_multiple_of` (dynamic
  padding: short-sentence tasks do not pay for max_seq_length; attention
  masks make the padding length invisible to the model). With
  `length_bucketing_window=K`, training takes K batches' worth of the
  stream at a time, sorts it by length, cuts it into K batches and shuffles
  their order: every example still comes once an epoch (up to the K-batch
  windows that straddle epochs), and batches pad far less.
  With `pack=True`, a batch's sequences (an example's, or each of its
  choices' for multiple choice) are instead packed first-fit-decreasing
  into rows of one fixed length (the set's longest sequence, rounded up):
  several short sequences share a row, each with its own positions (from
  0) and `pack_ids` (1, 2, ... within a row; 0 is padding) from which the
  model builds a block-diagonal attention mask, so no token attends across
  sequences, and `cls_at` / `last_at` ([B], or [B, C] with choices) point at
  each sequence's first and last token in the flattened [rows * length]
  batch. With `unpack=True` as well (token-level tasks: spans, tags),
  `unpack_at` [B, length] gives, for each example's position t, where its
  token t sits in that flattened batch (its first token past its end), and
  `example_mask` and the other per-token features ([B, length]) stay one
  example a row: the model gathers the encoder's output back into that
  layout, so heads and losses read it as unpacked. The encoder computes
  the same function of each sequence as unpacked; the rows processed per
  batch drop to about the real tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from bert_jax import model as model_lib
from bert_jax import pretrained

# Feature arrays whose last axis is the sequence (cut by dynamic padding).
SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids",
                     "label_ids", "label_weights", "position_ids")


@dataclasses.dataclass
class Encoder:
  """The encoder a fine-tuning run starts from."""
  config: model_lib.BertConfig
  params: Mapping[str, Any] | None  # BertModel params; None: fresh
  vocab_file: str
  report: str  # one line for the console and results.json


def load_encoder(config: ml_collections.ConfigDict) -> Encoder:
  """The starting encoder; errors name `config.init_checkpoint`."""
  path = config.init_checkpoint
  overrides = model_lib.job_overrides(config.model)
  if not path:
    vocab = config.vocab_file
    if not vocab:
      raise ValueError("config.vocab_file is needed when "
                       "config.init_checkpoint is empty")
    from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
    size = tokenization.create_tokenizer(vocab, config.do_lower_case
                                         ).vocab_size
    cfg = model_lib.BertConfig.from_preset(config.model.preset,
                                           vocab_size=size, **overrides)
    return Encoder(cfg, None, vocab, "no init_checkpoint: the encoder is "
                   f"freshly initialised ({config.model.preset})")
  cfg, params, report = pretrained.load_pretrained(path, task="encoder",
                                                   **overrides)
  vocab = config.vocab_file or pretrained.find_vocab(path)
  if not vocab:
    raise ValueError(f"config.init_checkpoint={path!r} has no vocab.txt "
                     "beside it; pass config.vocab_file")
  return Encoder(cfg, pretrained.jax_to_numpy(params), vocab, str(report))


def check_vocab(encoder: Encoder, tokenizer) -> None:
  """The tokenizer's ids must index the checkpoint's embedding table."""
  if tokenizer.vocab_size > encoder.config.vocab_size:
    raise ValueError(
        f"config.vocab_file={encoder.vocab_file!r} has "
        f"{tokenizer.vocab_size} entries, but the checkpoint's embedding "
        f"table has {encoder.config.vocab_size} rows: another vocabulary")


def pack_rows(lengths: np.ndarray, capacity: int
              ) -> tuple[np.ndarray, np.ndarray, int]:
  """First-fit decreasing: (row, offset) of each example, and the rows used.

  Examples of length 0 (batch padding) are not placed (row and offset 0).
  """
  n = len(lengths)
  row, offset = np.zeros(n, np.int64), np.zeros(n, np.int64)
  free: list[int] = []  # room left in each row
  for i in np.argsort(-lengths, kind="stable"):
    size = int(lengths[i])
    if size == 0:
      continue
    if size > capacity:
      raise ValueError(f"an example of {size} tokens does not fit a packed "
                       f"row of {capacity}")
    r = next((r for r, room in enumerate(free) if room >= size), len(free))
    if r == len(free):
      free.append(capacity)
    row[i], offset[i] = r, capacity - free[r]
    free[r] -= size
  return row, offset, len(free)


def num_train_steps(num_examples: int, batch_size: int,
                    epochs: float) -> int:
  """TF1 run_classifier's int(len(train_examples) / batch * epochs)."""
  return int(num_examples / batch_size * epochs)


class FeatureBatches(grain.MapDataset):
  """Element s: this host's rows of global batch s, dynamically padded."""

  def __init__(self, features: Mapping[str, np.ndarray], *,
               global_batch_size: int, seed: int, train: bool,
               num_epochs: float = 1.0, pad_to_multiple_of: int = 32,
               length_bucketing_window: int = 0,
               num_steps: int | None = None,
               pack: bool = False, unpack: bool = False,
               row_multiple: int = 1,
               process_index: int | None = None,
               process_count: int | None = None):
    super().__init__()
    self._features = {k: np.asarray(v) for k, v in features.items()}
    n = len(self._features["input_ids"])
    if n == 0:
      raise ValueError("no examples to make batches from")
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    process_count = (jax.process_count() if process_count is None
                     else process_count)
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise ValueError(f"global batch size {global_batch_size} is not a "
                       f"positive multiple of the {process_count} processes")
    self.num_examples = n
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.seed = seed
    self.train = train
    self.pad_to_multiple_of = pad_to_multiple_of
    if length_bucketing_window < 0:
      raise ValueError(f"length_bucketing_window={length_bucketing_window} "
                       "must be >= 0 (0: off)")
    self.window = length_bucketing_window if train else 0
    mask = self._features["input_mask"]
    # [n, sequences an example]: each sequence's length (one sequence an
    # example, or one per choice); an example's length is its longest.
    self._seq_lengths = mask.reshape(n, -1, mask.shape[-1]).sum(-1)
    self._lengths = self._seq_lengths.max(-1)
    self.max_seq_length = mask.shape[-1]
    self.process_count = process_count
    self.pack = pack
    self.unpack = unpack
    if pack:
      extra = [k for k in SEQUENCE_FEATURES if k in self._features
               and k not in ("input_ids", "input_mask", "segment_ids")]
      if mask.ndim not in (2, 3) or (mask.ndim == 3 and (extra or unpack)):
        raise ValueError("packing takes one sequence per example, or one "
                         "per choice with example-level labels; these "
                         f"features have {mask.shape} masks"
                         f"{' and ' + ', '.join(extra) if extra else ''}")
      if extra and not unpack:
        raise ValueError(f"token-level features ({', '.join(extra)}) need "
                         "unpack=True to be packed")
      m = pad_to_multiple_of
      self.pack_length = min(self.max_seq_length,
                             -(-int(self._lengths.max()) // m) * m)
      # Each host's rows split evenly over its devices; an even count on
      # one device halves the shapes compiled.
      self.row_multiple = max(row_multiple, 1)
    elif unpack:
      raise ValueError("unpack=True goes with pack=True")
    if train:
      self._len = (num_train_steps(n, global_batch_size, num_epochs)
                   if num_steps is None else num_steps)
      # Enough shuffled epochs for every step (more than num_epochs when
      # the steps are counted from fewer examples than features, as TF1's
      # run_squad counts them).
      epochs = max(int(np.ceil(num_epochs)),
                   -(-self._len * global_batch_size // n))
      order = grain.MapDataset.range(n).shuffle(seed=seed).repeat(epochs)
      self._order = order
      if self._len == 0:
        raise ValueError(f"{n} training examples x {num_epochs} epochs "
                         f"cannot fill one batch of {global_batch_size}")
    else:
      # Length order: batches of similar lengths pad least.
      self._order = np.argsort(self._lengths, kind="stable")
      self._len = -(-n // global_batch_size)

  def __len__(self) -> int:
    return self._len

  def __str__(self) -> str:
    return (f"FeatureBatches({self.num_examples} examples, batch "
            f"{self.global_batch_size}, {'train' if self.train else 'eval'})")

  def fingerprint(self) -> dict[str, Any]:
    return {"seed": self.seed, "num_records": self.num_examples,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.train, "length_bucketing_window": self.window}

  @functools.lru_cache(maxsize=4)
  def _window_batches(self, w: int) -> np.ndarray:
    """[batches, B] example indices of bucketing window w: its stream
    positions sorted by length, cut into batches, in a shuffled order."""
    b = self.global_batch_size
    first = w * self.window
    count = min(self.window, self._len - first)
    positions = range(first * b, (first + count) * b)
    idx = np.array([self._order[q] for q in positions], np.int64)
    idx = idx[np.argsort(self._lengths[idx], kind="stable")]
    batches = idx.reshape(count, b)
    rng = np.random.default_rng([self.seed, w])
    return batches[rng.permutation(count)]

  def _indices(self, step: int) -> np.ndarray:
    """Example indices of global batch `step` (-1: a padding row)."""
    if self.window:
      w, slot = divmod(step, self.window)
      return self._window_batches(w)[slot]
    start = step * self.global_batch_size
    positions = range(start, start + self.global_batch_size)
    if self.train:
      return np.array([self._order[q] for q in positions], np.int64)
    return np.array([self._order[q] if q < self.num_examples else -1
                     for q in positions], np.int64)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if not 0 <= index < self._len:
      raise IndexError(f"step {index} out of range [0, {self._len})")
    idx = self._indices(index)
    real = idx >= 0
    # One length for the global batch, so every host cuts alike.
    longest = int(self._lengths[idx[real]].max())
    m = self.pad_to_multiple_of
    length = min(self.max_seq_length, -(-longest // m) * m)
    lo = self.process_index * self.local_batch_size
    mine = idx[lo:lo + self.local_batch_size]
    if self.pack:
      return self._packed(idx, mine)
    out = {k: self._example_rows(v, mine, length if k in SEQUENCE_FEATURES
                                 else None)
           for k, v in self._features.items()}
    out["example_index"] = mine.astype(np.int32)
    return out

  def _example_rows(self, v: np.ndarray, mine: np.ndarray,
                    length: int | None) -> np.ndarray:
    """Feature `v` of examples `mine` (cut to `length` if given); in
    evaluation, padding rows (-1) are zeros."""
    x = v[np.maximum(mine, 0)]
    if length is not None:
      x = x[..., :length]
    if not self.train:
      x = np.where((mine >= 0).reshape((-1,) + (1,) * (x.ndim - 1)), x,
                   np.zeros_like(x))
    return np.ascontiguousarray(x)


  def _packed(self, idx: np.ndarray, mine: np.ndarray) -> dict[str, Any]:
    """This host's examples packed into rows (see the module docstring)."""
    cap = self.pack_length
    b = self.local_batch_size
    mask = self._features["input_mask"]
    choices = mask.shape[1] if mask.ndim == 3 else 0

    def lengths_of(ex):
      """[len(ex) * max(choices, 1)] sequence lengths, 0 for padding."""
      return (self._seq_lengths[np.maximum(ex, 0)]
              * (ex >= 0)[:, None]).reshape(-1)

    # Every host packs every host's share, so all agree on the row count.
    rows = max(pack_rows(lengths_of(idx[p * b:(p + 1) * b]), cap)[2]
               for p in range(self.process_count))
    rows = -(-rows // self.row_multiple) * self.row_multiple
    lengths = lengths_of(mine)
    row, offset, _ = pack_rows(lengths, cap)
    out = {k: np.zeros((rows, cap), np.int32)
           for k in ("input_ids", "input_mask", "segment_ids",
                     "position_ids", "pack_ids")}
    flat = {k: self._features[k].reshape(-1, self.max_seq_length)
            for k in ("input_ids", "input_mask", "segment_ids")}
    per_example = max(choices, 1)
    slot = np.zeros(rows, np.int32)
    for i in np.nonzero(lengths)[0]:
      r, o, n = row[i], offset[i], lengths[i]
      src = mine[i // per_example] * per_example + i % per_example
      slot[r] += 1
      for k, v in flat.items():
        out[k][r, o:o + n] = v[src, :n]
      out["position_ids"][r, o:o + n] = np.arange(n)
      out["pack_ids"][r, o:o + n] = slot[r]
    first = (self.process_index * rows + row) * cap + offset
    last = first + np.maximum(lengths - 1, 0)
    shape = (len(mine), choices) if choices else (len(mine),)
    out["cls_at"] = first.astype(np.int32).reshape(shape)
    out["last_at"] = last.astype(np.int32).reshape(shape)
    if self.unpack:
      t = np.arange(cap)
      inside = t[None] < lengths[:, None]
      out["unpack_at"] = np.where(inside, first[:, None] + t[None],
                                  first[:, None]).astype(np.int32)
      out["example_mask"] = inside.astype(np.int32)
      out.update({k: self._example_rows(v, mine, cap)
                  for k, v in self._features.items()
                  if k in SEQUENCE_FEATURES and k not in out})
    out.update({k: self._example_rows(v, mine, None)
                for k, v in self._features.items()
                if k not in SEQUENCE_FEATURES})
    out["example_index"] = mine.astype(np.int32)
    return out


def iterator(dataset: FeatureBatches, batch_sharding, prefetch: int = 4):
  from bert_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.GlobalBatchIterator(
      dataset, batch_sharding, num_threads=1, prefetch=prefetch)


def gather_predictions(outputs: list[Mapping[str, np.ndarray]],
                       num_examples: int, key: str = "logits"
                       ) -> np.ndarray:
  """Per-example outputs in example order; each example exactly once."""
  index = np.concatenate([np.asarray(o["example_index"]) for o in outputs])
  values = np.concatenate([np.asarray(o[key]) for o in outputs])
  keep = index >= 0
  index, values = index[keep], values[keep]
  if len(index) != num_examples or len(np.unique(index)) != num_examples:
    raise RuntimeError(f"evaluation saw {len(np.unique(index))} distinct of "
                       f"{num_examples} examples ({len(index)} rows)")
  out = np.empty((num_examples,) + values.shape[1:], values.dtype)
  out[index] = values
  return out


def write_tsv(path: str, header: list[str], rows) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\t".join(header) + "\n")
    for row in rows:
      f.write("\t".join(str(x) for x in row) + "\n")
  os.replace(tmp, path)
  return path
