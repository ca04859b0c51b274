"""The pre-training input pipeline: grain over ArrayRecord shards.

Reading order is a pure function of (seed, step): the records of all shards
form one random-access dataset that is shuffled (a new permutation every
epoch), repeated, and cut into global batches; global batch `s` is the
records at positions [s * B, (s + 1) * B) of that stream. Each host builds
only its rows of every global batch (rows [p * B/P, (p + 1) * B/P) for
process p of P), so the hosts together read each record once and the global
array equals the one a single process would build. Dynamic masking draws its
masks from (seed, position in the stream), so every epoch sees new masks and
a resumed run sees the same ones.

The iterator's state (grain's, a small dict) goes into the checkpoint; a
restored iterator continues with exactly the batch the interrupted one would
have produced next.

TFRecord shards (e.g. made by Google's original script) have no random
access; `convert_tfrecords` copies them into ArrayRecord once, record for
record, and the pipeline reads those.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from bert_jax import masking
from bert_jax import records

MANIFEST = "manifest.json"


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


def read_manifest(data_dir: str) -> dict[str, Any] | None:
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def find_shards(data_dir: str, split: str = "train") -> list[str]:
  """The complete ArrayRecord shards of a split in `data_dir`."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"data directory not found: {data_dir}")
  paths = sorted(glob.glob(os.path.join(data_dir,
                                        f"{split}-*-of-*.array_record")))
  if not paths:
    tfrecords = glob.glob(os.path.join(data_dir, f"{split}-*.tfrecord"))
    hint = (" (TFRecord shards found: convert them with "
            "input_pipeline.convert_tfrecords)" if tfrecords else "")
    raise FileNotFoundError(f"{data_dir}: no {split}-*-of-*.array_record "
                            f"shards{hint}")
  counts = {records.parse_shard_filename(p)["count"] for p in paths}
  if len(counts) != 1 or len(paths) != counts.pop():
    raise ValueError(f"{data_dir}: the {split} shards are incomplete "
                     f"({len(paths)} files: {[os.path.basename(p) for p in paths]})")
  return paths


def convert_tfrecords(pattern: str, output_dir: str,
                      split: str = "train") -> list[str]:
  """Copies TFRecord shards into ArrayRecord shards, record for record."""
  sources = sorted(glob.glob(pattern))
  if not sources:
    raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
  os.makedirs(output_dir, exist_ok=True)
  out = []
  for i, src in enumerate(sources):
    dst = os.path.join(output_dir, records.shard_filename(
        split, i, len(sources), "array_record"))
    with records.RecordWriter(dst, "array_record") as w:
      for rec in records.read_records(src):
        w.write(rec)
    out.append(dst)
  return out


def _parse(record: bytes, max_seq_length: int) -> dict[str, np.ndarray]:
  ex = records.parse_example(record)
  if ex["input_ids"].shape[0] != max_seq_length:
    raise ValueError(f"a record has sequence length "
                     f"{ex['input_ids'].shape[0]}, expected {max_seq_length}")
  return ex


def _mask(ex: dict[str, np.ndarray], rng: np.random.Generator,
          spec: MaskingSpec) -> dict[str, np.ndarray]:
  ids, pos, labels, weights = masking.create_masked_lm_predictions(
      ex["input_ids"], rng, special_ids=spec.special_ids,
      vocab_size=spec.vocab_size, mask_id=spec.mask_id,
      masked_lm_prob=spec.masked_lm_prob,
      max_predictions_per_seq=spec.max_predictions_per_seq,
      mask_ratios=spec.mask_ratios,
      word_start=(ex["word_start"].astype(bool) if spec.whole_word_mask
                  and "word_start" in ex else None),
      num_tokens=int(ex["input_mask"].sum()))
  out = {k: v for k, v in ex.items() if k != "word_start"}
  out.update(input_ids=ids, masked_lm_positions=pos, masked_lm_ids=labels,
             masked_lm_weights=weights)
  return out


def make_dataset(paths: Sequence[str], *, global_batch_size: int, seed: int,
                 max_seq_length: int, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool = True,
                 num_epochs: int | None = None,
                 dynamic_masking: MaskingSpec | None = None
                 ) -> grain.MapDataset:
  """This host's batches (a random-access grain dataset of numpy dicts).

  Element s is this host's rows of global batch s. With `num_epochs=None`
  the data repeats forever; partial final batches are dropped.
  """
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch_size % n:
    raise ValueError(f"global batch size {global_batch_size} is not "
                     f"divisible by the {n} processes")
  local = global_batch_size // n
  source = grain.sources.ArrayRecordDataSource(list(paths))
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  num_batches = len(ds) // global_batch_size
  if num_batches == 0:
    raise ValueError(f"{len(source)} records cannot fill one batch of "
                     f"{global_batch_size}")
  stream = ds

  def position(k: int) -> int:
    # Local row k -> its position in the global stream.
    step, row = divmod(k, local)
    return step * global_batch_size + p * local + row

  rows = grain.MapDataset.range(num_batches * local).map(position)
  if dynamic_masking is None:
    rows = rows.map(lambda i: _parse(stream[i], max_seq_length))
  else:
    spec = dynamic_masking
    # The rng of a row is derived from (seed, its global position), so
    # masks are the same on any number of hosts and new every epoch.
    rows = rows.map(lambda i: (i, _parse(stream[i], max_seq_length)))
    rows = rows.map(lambda item: _mask(
        item[1], np.random.default_rng([seed, 1, item[0]]), spec))
  return rows.batch(local, drop_remainder=True, batch_fn=_stack)


def _stack(examples: Sequence[Mapping[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
  keys = examples[0].keys()
  return {k: np.stack([e[k] for e in examples]) for k in keys}


class GlobalBatchIterator:
  """Global jax.Array batches from a host-local grain dataset.

  `get_state()` / `set_state()` carry grain's iterator state (JSON-able);
  the trainer saves it beside the train state.
  """

  def __init__(self, dataset: grain.MapDataset,
               sharding: jax.sharding.Sharding | None,
               num_threads: int = 4, prefetch: int = 8):
    self._iter = iter(dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch)))
    self._sharding = sharding

  def __iter__(self) -> "GlobalBatchIterator":
    return self

  def __next__(self) -> dict[str, Any]:
    local = next(self._iter)
    if self._sharding is None:
      return local
    return {k: jax.make_array_from_process_local_data(self._sharding, v)
            for k, v in local.items()}

  def get_state(self) -> dict[str, Any]:
    return self._iter.get_state()

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._iter.set_state(dict(state))


class PhasedIterator:
  """Phase 1 (e.g. seq 128) until `switch_step`, then phase 2 (seq 512).

  Its state records the step, so a run resumed on either side of the
  boundary continues in the right phase at the right batch.
  """

  def __init__(self, phases: Sequence[GlobalBatchIterator],
               switch_steps: Sequence[int]):
    if len(phases) != len(switch_steps) + 1:
      raise ValueError("need one switch step between consecutive phases")
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
    self._step = int(state["step"])
    for p, s in zip(self._phases, state["phases"]):
      p.set_state(s)
