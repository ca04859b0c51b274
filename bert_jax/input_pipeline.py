"""The pre-training input pipeline: grain over ArrayRecord shards.

Usage (what `train.py` does):

    paths = find_shards(data_dir, "train")      # or a glob of .array_record
    ds = make_dataset(paths, global_batch_size=256, seed=0,
                      max_seq_length=128,
                      dynamic_masking=MaskingSpec.from_manifest(
                          manifest.read(data_dir)))   # None: static masks
    it = GlobalBatchIterator(ds, NamedSharding(mesh, P(("data", "fsdp"))))
    batch = next(it)            # dict of global jax.Arrays [B, ...]
    ckpt.save(step, ..., data=it.get_state())    # a small JSON-able dict
    ...                                          # after a restart:
    it.set_state(restored_data_state)            # same batches from here on

Order. All records of all shards form one random-access dataset of N
records. Stream position q holds record `shuffle_{seed + q // N}(q % N)`
(grain's index shuffle: a new global permutation every epoch); global batch
`s` is positions [s * B, (s + 1) * B). So the batch at step s is a function
of (seed, s) only: `ds[s]` computes it directly, however step s was reached,
and a restored iterator continues with exactly the batch the interrupted one
would have produced next. Batches run across epoch boundaries, so nothing is
dropped when N is not a multiple of B.

Hosts. Process p of P reads only rows [p * B/P, (p + 1) * B/P) of every
global batch: the hosts read disjoint records that together cover the
stream, and the global batch does not depend on P (a run may resume on a
different number of hosts). `GlobalBatchIterator` assembles the global
arrays with `jax.make_array_from_process_local_data`; with the usual device
order (process p's devices holding the p-th block of the batch axis) the
global array is the one a single process would build.

Speed. A dataset element is a whole host batch: its records read from
ArrayRecord and parsed by `records.parse_examples` (protobuf, ~20-35 us a
record at seq 128; TensorFlow's batched parser is ~1.5x faster, but
importing TensorFlow costs seconds, ~500 MB and a page of start-up logs),
prefetched by grain's thread pool. See bench/bench_input_pipeline.py for
the sequences/s (the goal is 5,000 a core).

Dynamic masking. Records made with `--dynamic_masking` hold unmasked ids
(plus `word_start` for whole-word masking);
`masking.create_masked_lm_predictions_batch` masks a batch as it is read,
each row's random numbers keyed by (seed, its stream position)
(`masking.RowRandom`): masks are a function of (seed, step), identical on
any number of hosts, and new every epoch.

TFRecord. TFRecord files (e.g. from Google's original script) have no
random access. `convert_tfrecords`, or

    python -m bert_jax.input_pipeline --input_file='data/*.tfrecord' \
        --output_dir=DIR --vocab_file=vocab.txt

copies them once into ArrayRecord, record for record, and writes a manifest
inferred from their features; the pipeline (and the trainer) then read DIR.

Two phases. `PhasedIterator` switches from one iterator (seq 128) to the
next (seq 512) at a given step; its state holds the step and every phase's
position.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from bert_jax import manifest as manifest_lib
from bert_jax import masking
from bert_jax import records
from bert_jax import sources

# Mixed into the dynamic-masking seed so its stream never coincides with any
# other use of the run seed.
_MASKING_STREAM = 0x6D61736B

_MASKED_LM_FEATURES = ("masked_lm_positions", "masked_lm_ids",
                       "masked_lm_weights")


# -- manifest and shards -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  """What dynamic masking needs (from the manifest or the config)."""
  vocab_size: int
  mask_id: int
  special_ids: tuple[int, ...]
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  mask_ratios: tuple[float, float, float] = masking.DEFAULT_MASK_RATIOS
  whole_word_mask: bool = False

  def __post_init__(self):
    masking.check_mask_ratios(self.mask_ratios)
    if not 0 < self.masked_lm_prob < 1 or self.max_predictions_per_seq < 1:
      raise ValueError(f"masked_lm_prob={self.masked_lm_prob} must be in "
                       "(0, 1) and max_predictions_per_seq="
                       f"{self.max_predictions_per_seq} >= 1")

  @classmethod
  def from_manifest(cls, manifest: Mapping[str, Any] | None,
                    **overrides: Any) -> "MaskingSpec | None":
    """The spec of a dynamic-masking data directory; None for static data."""
    if manifest is None or manifest.get("options", {}).get(
        "masking") != "dynamic":
      return None
    try:
      o, v = manifest["options"], manifest["vocab"]
      kwargs = dict(
          vocab_size=v["size"], mask_id=v["mask_id"],
          special_ids=(v["cls_id"], v["sep_id"], v["pad_id"]),
          masked_lm_prob=o["masked_lm_prob"],
          max_predictions_per_seq=o["max_predictions_per_seq"],
          mask_ratios=tuple(o["mask_ratios"]),
          whole_word_mask=o["do_whole_word_mask"])
    except KeyError as e:
      raise ValueError(f"the {manifest_lib.FILENAME} of dynamic-masking data "
                       f"has no "
                       f"{e.args[0]!r} entry") from e
    kwargs.update(overrides)
    return cls(**kwargs)


def _tfrecord_hint(paths: Sequence[str], output: str) -> str:
  return (f"; TFRecord files have no random access: convert them once with "
          f"`python -m bert_jax.input_pipeline --input_file='{paths[0]}' "
          f"--output_dir={output} --vocab_file=VOCAB` and read that "
          "directory")


def find_shards(data_dir_or_pattern: str, split: str = "train") -> list[str]:
  """The ArrayRecord shards of a split: a data directory, a glob, a list.

  A directory yields its complete `split-*-of-*.array_record` shards (the
  manifest's list when it has one); anything else is a comma-separated list
  of globs or paths. Every failure is one error naming the path.
  """
  spec = data_dir_or_pattern
  if os.path.isdir(spec):
    manifest = manifest_lib.read(spec)
    section = (manifest or {}).get(split)
    if section and "shards" in section:
      paths = [os.path.join(spec, s["file"]) for s in section["shards"]]
      missing = [p for p in paths if not os.path.exists(p)]
      if missing:
        raise FileNotFoundError(f"{spec}: {manifest_lib.FILENAME} lists "
                                f"{missing[0]}, which does not exist")
    else:
      paths = sorted(glob.glob(os.path.join(spec,
                                            f"{split}-*-of-*.array_record")))
      if paths:
        counts = {records.parse_shard_filename(p)["count"] for p in paths}
        if len(counts) != 1 or len(paths) != next(iter(counts)):
          raise ValueError(
              f"{spec}: the {split} shards are incomplete ({len(paths)} "
              f"files: {[os.path.basename(p) for p in paths][:8]}...)")
    if not paths:
      found = [g for g in (os.path.join(spec, "*.tfrecord*"),
                           os.path.join(spec, "*.tf_record*")) if glob.glob(g)]
      hint = (_tfrecord_hint(found, spec.rstrip("/") + "_array_record")
              if found else "")
      raise FileNotFoundError(
          f"{spec}: no {split}-*-of-*.array_record shards{hint}")
    return paths

  paths = sources.expand_inputs(spec, flag="data_dir",
                                what="directory or shard", tfds=False)
  tfrecords = [p for p in paths if not p.endswith(".array_record")]
  if tfrecords:
    raise ValueError(f"{tfrecords[0]}: not an .array_record shard"
                     + _tfrecord_hint(tfrecords, "DIR"))
  return paths


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """A record's features: name -> (is_float, length), all fixed-length."""
  features: tuple[tuple[str, bool, int], ...]

  @classmethod
  def of(cls, example: Mapping[str, np.ndarray]) -> "FeatureSpec":
    return cls(tuple(sorted(
        (k, bool(np.issubdtype(v.dtype, np.floating)), int(v.shape[0]))
        for k, v in example.items())))

  def as_dict(self) -> dict[str, tuple[bool, int]]:
    return {k: (f, n) for k, f, n in self.features}

  def describe(self) -> str:
    return ", ".join(f"{k}[{n}]" for k, _, n in self.features)


def inspect_shards(paths: Sequence[str]) -> tuple[list[int], FeatureSpec]:
  """Record counts per shard and the feature spec they all share.

  Reads the first record of every shard, so shards of different sequence
  lengths (or kinds) are caught here, with the file named, rather than
  half-way through training.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  counts, spec, spec_path = [], None, None
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no such record file")
    try:  # the reader's C++ errors (RuntimeError) come from any call
      reader = array_record_module.ArrayRecordReader(path)
      try:
        n = reader.num_records()
        first = reader.read([0])[0] if n else None
      finally:
        reader.close()
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{path}: not a readable ArrayRecord file ({e})") from e
    counts.append(n)
    if n == 0:
      continue
    try:
      this = FeatureSpec.of(records.parse_example(first))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{path}: record 0 is not a tf.train.Example "
                       f"({type(e).__name__}: {e})") from e
    if "input_ids" not in this.as_dict():
      raise ValueError(f"{path}: records have no input_ids feature (they "
                       f"hold {this.describe()})")
    if spec is None:
      spec, spec_path = this, path
    elif this != spec:
      raise ValueError(
          f"{path}: records hold {this.describe()}, but {spec_path} holds "
          f"{spec.describe()}; shards of one dataset must agree (different "
          "sequence lengths belong in different phases)")
  if spec is None:
    raise ValueError(f"{paths[0]}...: all {len(paths)} shards are empty")
  return counts, spec


# -- the dataset -------------------------------------------------------------

@functools.cache
def _tf():
  """TensorFlow, to read TFRecord files (conversion only), off accelerators."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # already initialised: leave it be
    pass
  return tf


class _ShardReaders:
  """Lazily opened ArrayRecord readers, shared by grain's prefetch threads.

  grain's ArrayRecordDataSource starts a thread pool for every batched read
  (~4 ms a batch); reading in the calling thread is several times cheaper,
  and grain's prefetch threads already overlap the batches.
  """

  # A multi-record read has a fixed cost of ~1 ms (the reader's own thread
  # pool); below this many records of one shard, single reads are cheaper
  # (measured: 64 records 19 us each batched vs 15 single; 256: 7 vs 15).
  BATCHED_READ_MIN = 128

  def __init__(self, paths: Sequence[str]):
    self._paths = list(paths)
    self._readers: list[Any] = [None] * len(self._paths)
    self._lock = threading.Lock()

  def read(self, shard: int, positions: list[int]) -> list[bytes]:
    reader = self._readers[shard]
    if reader is None:
      with self._lock:
        if self._readers[shard] is None:
          from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
          # No readahead: reads are random, a whole batch at a time.
          self._readers[shard] = array_record_module.ArrayRecordReader(
              self._paths[shard], "readahead_buffer_size:0")
        reader = self._readers[shard]
    if len(positions) >= self.BATCHED_READ_MIN:
      return reader.read(positions)
    return [reader.read([p])[0] for p in positions]

  def __getstate__(self) -> dict[str, Any]:
    return {"paths": self._paths}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["paths"])


class PretrainingBatches(grain.MapDataset):
  """Element s: this host's rows of global batch s, a dict of numpy arrays.

  Random access (`ds[s]`), so grain prefetches by index and an iterator can
  start at any step. Use `make_dataset` to build one.
  """

  def __init__(self, paths: Sequence[str], *, global_batch_size: int,
               seed: int, max_seq_length: int | None, process_index: int,
               process_count: int, shuffle: bool, num_epochs: int | None,
               dynamic_masking: MaskingSpec | None):
    super().__init__()
    if not 0 <= seed < 2**32:
      raise ValueError(f"seed={seed}: must be in [0, 2**32)")
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise ValueError(f"global batch size {global_batch_size} is not a "
                       f"positive multiple of the {process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} not in "
                       f"[0, {process_count})")
    self._paths = list(paths)
    counts, spec = inspect_shards(self._paths)
    feats = spec.as_dict()
    seq = feats["input_ids"][1]
    if max_seq_length is not None and seq != max_seq_length:
      raise ValueError(f"{self._paths[0]}: records have sequence length "
                       f"{seq}, but max_seq_length={max_seq_length} was "
                       "asked for")
    masked = all(k in feats for k in _MASKED_LM_FEATURES)
    if dynamic_masking is not None and masked:
      raise ValueError(f"{self._paths[0]}: records are already masked "
                       "(masked_lm_* features); dynamic masking needs data "
                       "made with --dynamic_masking")
    if dynamic_masking is None and "word_start" in feats and not masked:
      raise ValueError(f"{self._paths[0]}: records are unmasked (made for "
                       "dynamic masking); pass dynamic_masking=MaskingSpec("
                       "...) (MaskingSpec.from_manifest reads it)")
    self._counts = np.cumsum([0] + counts)
    self.num_records = int(self._counts[-1])
    self.max_seq_length = seq
    self.feature_spec = spec
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.process_count = process_count
    self.seed = seed
    self.shuffle = shuffle
    self.num_epochs = num_epochs
    self.dynamic_masking = dynamic_masking
    order = grain.MapDataset.range(self.num_records)
    if shuffle:
      order = order.shuffle(seed=seed)
    # Repeating a shuffled dataset reshuffles each epoch (seed + epoch).
    self._order = order.repeat(num_epochs)
    self._len = len(self._order) // global_batch_size
    if self._len == 0:
      raise ValueError(f"{self._paths[0]}...: {self.num_records} records "
                       f"cannot fill one batch of {global_batch_size}")
    self._readers = _ShardReaders(self._paths)

  def __len__(self) -> int:
    return self._len

  def __str__(self) -> str:
    return (f"PretrainingBatches({len(self._paths)} shards, "
            f"{self.num_records} records, batch {self.global_batch_size}, "
            f"process {self.process_index}/{self.process_count})")

  def fingerprint(self) -> dict[str, Any]:
    """What must match for a saved position to mean the same batches."""
    return {"seed": self.seed, "num_records": self.num_records,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.shuffle}

  def positions(self, step: int) -> np.ndarray:
    """The stream positions of this host's rows of global batch `step`."""
    start = step * self.global_batch_size + (self.process_index *
                                             self.local_batch_size)
    return np.arange(start, start + self.local_batch_size, dtype=np.int64)

  def record_indices(self, step: int) -> list[int]:
    return [self._order[int(q)] for q in self.positions(step)]

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    if not 0 <= index < self._len:
      raise IndexError(f"step {index} out of range [0, {self._len})")
    keys = self.record_indices(index)
    batch = self._parse(self._read(keys), keys)
    if self.dynamic_masking is not None:
      batch = self._mask(batch, self.positions(index))
    return batch

  def _read(self, keys: Sequence[int]) -> list[bytes]:
    """The records at global indices `keys`: one batched read per shard."""
    keys = np.asarray(keys, np.int64)
    shard_of = np.searchsorted(self._counts, keys, side="right") - 1
    out: list[bytes] = [b""] * len(keys)
    for shard in np.unique(shard_of):
      rows = np.flatnonzero(shard_of == shard)
      try:
        got = self._readers.read(int(shard),
                                 (keys[rows] - self._counts[shard]).tolist())
      except (RuntimeError, OSError) as e:  # a damaged chunk of the file
        raise ValueError(f"{self._locate(int(keys[rows[0]]))}: unreadable "
                         f"({' '.join(str(e).split())[:200]})") from e
      for r, rec in zip(rows.tolist(), got):
        out[r] = rec
    return out

  def _locate(self, key: int) -> str:
    shard = int(np.searchsorted(self._counts, key, side="right")) - 1
    return f"{self._paths[shard]} record {key - int(self._counts[shard])}"

  def _parse(self, raw: Sequence[bytes], keys: Sequence[int]
             ) -> dict[str, np.ndarray]:
    try:
      return records.parse_examples(raw, self.feature_spec.features)
    except Exception as e:  # pylint: disable=broad-except
      raise self._bad_record(raw, keys) from e

  def _bad_record(self, raw: Sequence[bytes], keys: Sequence[int]
                  ) -> ValueError:
    """One clear error for the first record that does not fit the spec."""
    want = self.feature_spec
    for rec, key in zip(raw, keys):
      try:
        got = FeatureSpec.of(records.parse_example(rec))
      except Exception as e:  # pylint: disable=broad-except
        return ValueError(f"{self._locate(key)}: not a tf.train.Example "
                          f"({e})")
      if got != want:
        return ValueError(f"{self._locate(key)}: holds {got.describe()}, "
                          f"but {self._paths[0]} holds {want.describe()}")
    return ValueError(f"{self._locate(keys[0])}...: a record in this batch "
                      "cannot be parsed")

  def _mask(self, batch: dict[str, np.ndarray], positions: np.ndarray
            ) -> dict[str, np.ndarray]:
    spec = self.dynamic_masking
    ids = batch["input_ids"]
    num_tokens = batch["input_mask"].sum(axis=1)
    word_start = batch.pop("word_start", None)
    # Each row's randomness is keyed by its global stream position: the
    # same mask on any number of hosts, a new one every epoch.
    rng = masking.RowRandom(masking.row_keys(self.seed, _MASKING_STREAM,
                                             positions))
    out_ids, out_pos, out_lab, out_w = (
        masking.create_masked_lm_predictions_batch(
            ids, num_tokens, rng, special_ids=spec.special_ids,
            vocab_size=spec.vocab_size, mask_id=spec.mask_id,
            masked_lm_prob=spec.masked_lm_prob,
            max_predictions_per_seq=spec.max_predictions_per_seq,
            mask_ratios=spec.mask_ratios,
            word_start=(word_start.astype(bool)
                        if spec.whole_word_mask and word_start is not None
                        else None)))
    batch.update(input_ids=out_ids, masked_lm_positions=out_pos,
                 masked_lm_ids=out_lab, masked_lm_weights=out_w)
    return batch


def make_dataset(paths: str | Sequence[str], *, global_batch_size: int,
                 seed: int, max_seq_length: int | None = None,
                 process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool = True,
                 num_epochs: int | None = None,
                 dynamic_masking: MaskingSpec | None = None
                 ) -> PretrainingBatches:
  """This host's batches: element s is its rows of global batch s.

  Args:
    paths: ArrayRecord shards, or a data directory / glob (`find_shards`).
    global_batch_size: B, over all hosts; each host gets B / process_count.
    seed: fixes the order (and the dynamic masks) for every step.
    max_seq_length: checked against the records (None: taken from them).
    process_index, process_count: default to JAX's.
    shuffle: False reads the records in shard order (evaluation).
    num_epochs: None repeats forever; a partial final batch is dropped.
    dynamic_masking: mask unmasked records as they are read.

  Returns:
    A random-access grain dataset of dicts of int32/float32 numpy arrays
    with a leading dimension of B / process_count.
  """
  if isinstance(paths, str):
    paths = find_shards(paths)
  return PretrainingBatches(
      paths, global_batch_size=global_batch_size, seed=seed,
      max_seq_length=max_seq_length,
      process_index=(jax.process_index() if process_index is None
                     else process_index),
      process_count=(jax.process_count() if process_count is None
                     else process_count),
      shuffle=shuffle, num_epochs=num_epochs,
      dynamic_masking=dynamic_masking)


# -- iterators ---------------------------------------------------------------

class GlobalBatchIterator:
  """Global jax.Array batches (or host numpy batches) from a dataset.

  `get_state()` is a small JSON-able dict (the step, plus what identifies
  the data); the trainer saves it beside the train state and gives it back
  to `set_state()` to continue with exactly the next batch. grain's thread
  pool prefetches `prefetch` batches ahead.
  """

  def __init__(self, dataset: grain.MapDataset,
               sharding: jax.sharding.Sharding | None, *,
               start_step: int = 0, num_threads: int = 4,
               prefetch: int = 8):
    self._dataset = dataset
    self._sharding = sharding
    self._options = grain.ReadOptions(num_threads=num_threads,
                                      prefetch_buffer_size=prefetch)
    self._iter = None
    self._seek(start_step)

  def _seek(self, step: int) -> None:
    if not 0 <= step <= len(self._dataset):
      raise ValueError(f"step {step} is outside the dataset's "
                       f"{len(self._dataset)} batches")
    if self._iter is not None and hasattr(self._iter, "close"):
      self._iter.close()
    ds = self._dataset[step:] if step else self._dataset
    self._iter = iter(ds.to_iter_dataset(self._options))
    self._step = step

  @property
  def step(self) -> int:
    """The index of the batch `next` returns."""
    return self._step

  def __iter__(self) -> "GlobalBatchIterator":
    return self

  def __next__(self) -> dict[str, Any]:
    local = next(self._iter)
    self._step += 1
    if self._sharding is None:
      return local
    return {k: jax.make_array_from_process_local_data(self._sharding, v)
            for k, v in local.items()}

  def _fingerprint(self) -> dict[str, Any]:
    fp = getattr(self._dataset, "fingerprint", None)
    return fp() if fp is not None else {}

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, **self._fingerprint()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if "step" not in state and "next_index" in state:  # grain's own format
      state = {"step": state["next_index"]}
    if "step" not in state:
      raise ValueError(f"not an input-pipeline state: {dict(state)}")
    mine = self._fingerprint()
    diff = {k: (state[k], v) for k, v in mine.items()
            if k in state and state[k] != v}
    if diff:
      raise ValueError(
          "the saved input-pipeline state belongs to other data or "
          "settings: " + ", ".join(f"{k} was {a}, is {b}"
                                   for k, (a, b) in diff.items()) +
          "; resuming would not see the batches the run would have seen")
    self._seek(int(state["step"]))

  def close(self) -> None:
    if self._iter is not None and hasattr(self._iter, "close"):
      self._iter.close()


class PhasedIterator:
  """Phase 1 (e.g. seq 128) until `switch_steps[0]`, then phase 2 (seq 512).

  Each phase's iterator starts at its own batch 0 when its phase begins.
  The state holds the global step and every phase's position, so a run
  resumed on either side of a boundary continues in the right phase at the
  right batch.
  """

  def __init__(self, phases: Sequence[GlobalBatchIterator],
               switch_steps: Sequence[int]):
    if len(phases) != len(switch_steps) + 1:
      raise ValueError("need one switch step between consecutive phases")
    if list(switch_steps) != sorted(switch_steps) or any(
        s <= 0 for s in switch_steps):
      raise ValueError(f"switch steps {list(switch_steps)} must be positive "
                       "and increasing")
    self._phases = list(phases)
    self._switch = list(switch_steps)
    self._step = 0

  def phase_at(self, step: int) -> int:
    return sum(step >= s for s in self._switch)

  def __iter__(self) -> "PhasedIterator":
    return self

  def __next__(self) -> dict[str, Any]:
    batch = next(self._phases[self.phase_at(self._step)])
    self._step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step,
            "phases": [p.get_state() for p in self._phases]}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if len(state.get("phases", ())) != len(self._phases):
      raise ValueError(f"the saved input state has "
                       f"{len(state.get('phases', ()))} phases, this run "
                       f"{len(self._phases)}")
    self._step = int(state["step"])
    for p, s in zip(self._phases, state["phases"]):
      p.set_state(s)

  def close(self) -> None:
    for p in self._phases:
      p.close()


# -- TFRecord conversion ------------------------------------------------------

def _infer_options(spec: FeatureSpec) -> dict[str, Any]:
  f = spec.as_dict()
  masked = all(k in f for k in _MASKED_LM_FEATURES)
  if masked:
    objective = "mlm_nsp" if "next_sentence_labels" in f else "mlm"
    masking_kind = "static"
  elif "word_start" in f:
    objective = "mlm_nsp" if "next_sentence_labels" in f else "mlm"
    masking_kind = "dynamic"
  else:
    objective, masking_kind = "ltr", "none"
  options = {"objective": objective, "max_seq_length": f["input_ids"][1],
             "masking": masking_kind}
  if masked:
    options["max_predictions_per_seq"] = f["masked_lm_ids"][1]
  return options


def convert_tfrecords(pattern: str, output_dir: str, split: str = "train", *,
                      vocab_file: str) -> list[str]:
  """Copies TFRecord files into ArrayRecord shards, record for record.

  One shard per input file, named `split-0000k-of-000NN.array_record`, and a
  manifest (options inferred from the features, the vocab's size and
  special ids from `vocab_file`, the vocab the records were made with) so
  the directory reads like one made by `create_pretraining_data`.
  Converting a second split into the same directory adds it to the manifest.
  """
  inputs = sources.expand_inputs(pattern, what="TFRecord file", tfds=False)
  # The ids the records were made with; no checksum (it never had one).
  vocab = manifest_lib.vocab_section(vocab_file, checksum=False)
  tf = _tf()
  os.makedirs(output_dir, exist_ok=True)
  out, shards = [], []
  for i, src in enumerate(inputs):
    dst = os.path.join(output_dir, records.shard_filename(
        split, i, len(inputs), "array_record"))
    with records.RecordWriter(dst, "array_record") as w:
      try:
        for rec in tf.data.TFRecordDataset(src).as_numpy_iterator():
          w.write(rec)
      except tf.errors.DataLossError as e:
        raise ValueError(f"{src}: not a readable TFRecord file ({e.message})"
                         ) from e
    out.append(dst)
    shards.append({"file": os.path.basename(dst), "records": w.count,
                   "source": os.path.abspath(src)})
    print(f"{src} -> {dst}: {w.count} records", flush=True)
  _, spec = inspect_shards(out)
  path = os.path.join(output_dir, manifest_lib.FILENAME)
  manifest = manifest_lib.read(output_dir) or {"format": "array_record"}
  options = {**manifest.get("options", {}), **_infer_options(spec)}
  if "options" in manifest and any(
      manifest["options"].get(k) != v for k, v in _infer_options(
          spec).items()):
    raise ValueError(f"{path}: its options {manifest['options']} do not "
                     f"match the {split} records ({spec.describe()})")
  manifest["options"] = options
  manifest[split] = {"shards": shards,
                     "instances": sum(s["records"] for s in shards)}
  manifest["vocab"] = vocab
  manifest_lib.write(output_dir, manifest)
  return out


def main(argv: Sequence[str] | None = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description="Convert TFRecord pre-training data to ArrayRecord.")
  parser.add_argument("--input_file", required=True,
                      help="comma-separated globs of TFRecord files")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--split", default="train")
  parser.add_argument("--vocab_file", required=True,
                      help="the vocab the records were made with")
  args = parser.parse_args(argv)
  try:
    convert_tfrecords(args.input_file, args.output_dir, args.split,
                      vocab_file=args.vocab_file)
  except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
