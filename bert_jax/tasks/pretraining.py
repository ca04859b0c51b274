"""Pre-training: masked LM + next-sentence prediction (or No-NSP, or LTR).

The task of `configs/pretrain.py`: data made by the original algorithm
(`pretraining_data.create_pretraining_data`, run here when the data
directory has none), one or two phases (seq 128, then 512), the TF1 loss
(weighted mean masked-LM loss + mean NSP loss), held-out masked-LM
accuracy / perplexity and NSP accuracy, and at the end the model exported
in bert_jax and Hugging Face formats.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from bert_jax import heads
from bert_jax import input_pipeline
from bert_jax import manifest as manifest_lib
from bert_jax import model as model_lib
from bert_jax import pretrained
from bert_jax import pretraining_data
from bert_jax import sources
from bert_jax import storage
from bert_jax.tasks import base

OBJECTIVES = ("mlm_nsp", "mlm", "ltr")


def model_config(config: ml_collections.ConfigDict,
                 vocab_size: int | None = None) -> model_lib.BertConfig:
  """The BertConfig of a pre-training config (`config.model` + objective)."""
  overrides = model_lib.job_overrides(config.model) | dict(
      hidden_act=config.model.hidden_act,
      attention="causal" if config.objective == "ltr" else "bidirectional")
  if vocab_size:
    overrides["vocab_size"] = vocab_size
  return model_lib.BertConfig.from_preset(config.model.preset, **overrides)


def make_model(cfg: model_lib.BertConfig, objective: str,
               rngs: nnx.Rngs) -> nnx.Module:
  if objective == "ltr":
    return heads.BertForLTR(cfg, rngs=rngs)
  return heads.BertForPreTraining(cfg, nsp=objective == "mlm_nsp", rngs=rngs)


def batch_spec(objective: str, batch: int, seq_len: int, num_pred: int
               ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes and dtypes of one global batch for the objective."""
  spec = {
      "input_ids": ((batch, seq_len), jnp.int32),
      "input_mask": ((batch, seq_len), jnp.int32),
      "segment_ids": ((batch, seq_len), jnp.int32),
  }
  if objective != "ltr":
    spec.update(
        masked_lm_positions=((batch, num_pred), jnp.int32),
        masked_lm_ids=((batch, num_pred), jnp.int32),
        masked_lm_weights=((batch, num_pred), jnp.float32),
        next_sentence_labels=((batch, 1), jnp.int32))
  return spec


def forward_loss(model, batch, rng, objective, denominators=None):
  if objective == "ltr":
    out = model(batch["input_ids"], batch["segment_ids"],
                batch["input_mask"], rng=rng)
    return heads.ltr_loss(out, batch, denominators)
  out = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
              batch["masked_lm_positions"], rng=rng)
  return heads.pretraining_loss(out, batch, denominators)


def summarize(sums: Mapping[str, float], objective: str) -> dict[str, float]:
  """Accuracy / loss / perplexity from accumulated metric sums."""
  out = {}
  if objective == "ltr":
    w = max(sums["lm_weight"], 1e-9)
    out["lm_loss"] = sums["lm_loss_sum"] / w
    out["lm_accuracy"] = sums["lm_correct"] / w
    out["lm_perplexity"] = math.exp(min(out["lm_loss"], 50.0))
    return out
  w = max(sums["mlm_weight"], 1e-9)
  out["masked_lm_loss"] = sums["mlm_loss_sum"] / w
  out["masked_lm_accuracy"] = sums["mlm_correct"] / w
  out["masked_lm_perplexity"] = math.exp(min(out["masked_lm_loss"], 50.0))
  if "nsp_count" in sums:
    n = max(sums["nsp_count"], 1e-9)
    out["next_sentence_loss"] = sums["nsp_loss_sum"] / n
    out["next_sentence_accuracy"] = sums["nsp_correct"] / n
  return out


def sum_outputs(outputs: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
  """Adds up per-batch metric sums."""
  if not outputs:
    return {}
  return {k: float(sum(np.asarray(o[k], np.float64) for o in outputs))
          for k in outputs[0]}


# -- data --------------------------------------------------------------------

def prepare_data(config, workdir: str, seq_len: int, num_pred: int,
                 data_dir: str) -> str:
  """Creates the shards (process 0) unless data_dir already has them.

  Returns the local directory to read: for a gs:// data_dir, this host's
  cached copy of it (`storage.cached_copy`; data made here is uploaded
  there first).
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or os.path.join(workdir, f"data_{seq_len}")
  url = data_dir if storage.is_remote(data_dir) else None
  if url:
    data_dir = os.path.join(storage.cache_root(), "made", url[5:])
  if (jax.process_index() == 0 and not storage.exists(
      os.path.join(url or data_dir, manifest_lib.FILENAME))):
    d = config.data
    opts = pretraining_data.DataOptions(
        max_seq_length=seq_len, max_predictions_per_seq=num_pred,
        masked_lm_prob=d.masked_lm_prob, short_seq_prob=d.short_seq_prob,
        dupe_factor=d.dupe_factor, objective=config.objective,
        mask_ratios=tuple(d.mask_ratios), whole_word_mask=d.whole_word_mask,
        dynamic_masking=d.dynamic_masking)
    logging.info("preparing pre-training data in %s", data_dir)
    m = pretraining_data.create_pretraining_data(
        d.input_file, data_dir, d.vocab_file, d.do_lower_case, opts=opts,
        random_seed=config.seed, num_workers=d.num_workers,
        num_shards=d.num_shards, eval_fraction=d.eval_fraction)
    print(f"prepared {m['train']['instances']} training and "
          f"{m.get('eval', {}).get('instances', 0)} held-out examples in "
          f"{m['seconds']} s", flush=True)
    if url:
      storage.upload_tree(data_dir, url)
      shutil.rmtree(data_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("prepare_data")
  return storage.cached_copy(url) if url else data_dir


def _masking_spec(config, manifest, num_pred, split):
  if manifest is None or manifest["options"]["masking"] != "dynamic":
    return None
  v = manifest["vocab"]
  return input_pipeline.MaskingSpec(
      vocab_size=v["size"], mask_id=v["mask_id"],
      special_ids=(v["cls_id"], v["sep_id"], v["pad_id"]),
      masked_lm_prob=config.data.masked_lm_prob,
      max_predictions_per_seq=num_pred,
      # Held-out data is masked the standard way whatever the variant (as
      # static data is made), so Table 8 rows evaluate on the same masks.
      mask_ratios=(pretraining_data.EVAL_MASK_RATIOS if split == "eval"
                   else tuple(config.data.mask_ratios)),
      whole_word_mask=config.data.whole_word_mask)


def make_iterator(config, data_dir: str, split: str, batch: int, seq_len: int,
                  num_pred: int, batch_sharding, *, shuffle=True,
                  num_epochs=None) -> input_pipeline.GlobalBatchIterator:
  manifest = manifest_lib.read(data_dir)
  ds = input_pipeline.make_dataset(
      input_pipeline.find_shards(data_dir, split), global_batch_size=batch,
      seed=config.seed, max_seq_length=seq_len, shuffle=shuffle,
      num_epochs=num_epochs,
      dynamic_masking=_masking_spec(config, manifest, num_pred, split))
  return input_pipeline.GlobalBatchIterator(ds, batch_sharding)


def eval_iterator(config, data_dir: str, seq_len: int, num_pred: int,
                  batch_sharding) -> input_pipeline.GlobalBatchIterator:
  """The held-out batches: every record once, in shard order."""
  return make_iterator(config, data_dir, "eval", config.eval_batch_size,
                       seq_len, num_pred, batch_sharding, shuffle=False,
                       num_epochs=1)


def eval_masking(config, manifest) -> dict[str, Any] | None:
  """How the held-out split is masked, for results.json (None: no MLM).

  Data made here masks it 80/10/10 with draws fixed by the seed, whatever
  the variant; data made before that (static, a variant's own ratios) and
  Google's TF1 data (no manifest) are reported as they are.
  """
  if config.objective == "ltr":
    return None
  if manifest is None:
    return {"mask_ratios": None, "same_for_every_mask_variant": None,
            "note": "data without a manifest: masked as it was made"}
  o = manifest["options"]
  dynamic = o.get("masking") == "dynamic"
  ratios = (pretraining_data.EVAL_MASK_RATIOS if dynamic else
            o.get("eval_mask_ratios", o.get("mask_ratios")))
  ratios = [float(r) for r in ratios] if ratios is not None else None
  standard = ratios is not None and np.allclose(
      ratios, pretraining_data.EVAL_MASK_RATIOS)
  return {"mask_ratios": ratios,
          "masking": "dynamic" if dynamic else "static",
          "seed": config.seed if dynamic else o.get("random_seed"),
          "same_for_every_mask_variant": bool(
              standard and (dynamic or "eval_mask_ratios" in o))}


def preflight(config, data_dir: str, seq_len: int, num_pred: int
              ) -> dict[str, Any] | None:
  """Checks a data directory against the run before its first step.

  Returns its manifest (None for Google's TF1 data, which records nothing
  to check). Raises base.ConfigError (one line naming the key or path) when
  the data was made for another objective or length, or has no held-out
  split for the evaluations the run will do.
  """
  manifest = manifest_lib.read(data_dir)
  if manifest is None:
    return None
  options = manifest.get("options", {})
  want = {"objective": config.objective, "max_seq_length": seq_len}
  if config.objective != "ltr":
    want["max_predictions_per_seq"] = num_pred
  wrong = [f"{k}: data {options[k]!r}, run {v!r}" for k, v in want.items()
           if k in options and options[k] != v]
  if wrong:
    raise base.ConfigError(
        f"{data_dir} was made for another run ({'; '.join(wrong)}); make "
        "data with the run's settings or point config.data.data_dir at it")
  try:
    input_pipeline.find_shards(data_dir, "eval")
  except (FileNotFoundError, ValueError) as e:
    raise base.ConfigError(
        f"{data_dir} has no held-out split, which evaluation (every "
        f"config.eval_every_steps={config.eval_every_steps} steps and at "
        "the end) needs: make the data with --eval_fraction (e.g. 0.01) "
        f"({str(e).strip()})") from e
  return manifest


def resolve_vocab(config, data_dir: str, manifest) -> str:
  """The data's vocabulary file, wherever this machine has it.

  The manifest records the absolute path the data was made with; on
  another machine that path may not exist. Then config.data.vocab_file, or
  a file of the same name beside the data, serves if its sha256 is the one
  the manifest recorded.
  """
  v = manifest["vocab"]
  if os.path.isfile(v["file"]):
    return v["file"]
  candidates = [config.data.vocab_file,
                os.path.join(data_dir, os.path.basename(v["file"]))]
  for path in candidates:
    if path and os.path.isfile(path) and (
        "sha256" not in v or manifest_lib.sha256(path) == v["sha256"]):
      return path
  raise base.ConfigError(
      f"{data_dir}: its vocabulary {v['file']} is not on this machine, and "
      f"neither config.data.vocab_file={config.data.vocab_file!r} nor "
      f"{candidates[1]} is that file (sha256 {v.get('sha256', '?')[:12]}); "
      "pass config.data.vocab_file")


# -- the task ----------------------------------------------------------------

class PretrainingTask(base.Task):
  """Masked LM (+ NSP), or the left-to-right LM, from raw text."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.objective = config.objective
    self.progress_metric = ("lm_accuracy" if self.objective == "ltr"
                            else "masked_lm_accuracy")
    self._phases: list[tuple[str, int, int, int]] = []
    self._vocab_size: int | None = None
    self._manifest: dict[str, Any] | None = None
    self._vocab_file: str = config.data.vocab_file

  def validate(self, check) -> None:
    config = self.config
    check(config.objective in OBJECTIVES,
          f"config.objective={config.objective!r} not in "
          f"{', '.join(OBJECTIVES)}")
    check(config.phase2_train_batch_size > 0,
          f"config.phase2_train_batch_size={config.phase2_train_batch_size} "
          "must be > 0")
    cfg = model_config(config)  # raises ValueError naming the field
    for key in ("max_seq_length", "phase2_max_seq_length"):
      if key == "phase2_max_seq_length" and not config.phase2_start_step:
        continue
      check(config[key] <= cfg.max_position_embeddings,
            f"config.{key}={config[key]} is longer than the position table "
            f"(max_position_embeddings={cfg.max_position_embeddings})")
    check(config.num_train_steps > 0,
          f"config.num_train_steps={config.num_train_steps} must be > 0")
    check(0 <= config.num_warmup_steps <= config.num_train_steps,
          f"config.num_warmup_steps={config.num_warmup_steps} must be in "
          f"[0, num_train_steps]")
    check(0 <= config.phase2_start_step < config.num_train_steps,
          f"config.phase2_start_step={config.phase2_start_step} must be in "
          "[0, num_train_steps) (0 = one phase)")
    if not config.data.data_dir or not storage.exists(
        os.path.join(config.data.data_dir, manifest_lib.FILENAME)):
      pattern = config.data.input_file
      try:
        sources.expand_inputs(pattern)
        found = bool(pattern)
      except (FileNotFoundError, ValueError):
        found = False
      check(found,
            f"config.data.input_file={pattern!r} matches no file (and "
            f"config.data.data_dir={config.data.data_dir!r} holds no "
            "prepared data)")
      check(os.path.exists(config.data.vocab_file),
            f"config.data.vocab_file={config.data.vocab_file!r} does not "
            "exist")

  def prepare(self, workdir: str) -> None:
    config = self.config
    seq1, pred1 = config.max_seq_length, config.max_predictions_per_seq
    data1 = prepare_data(config, workdir, seq1, pred1, config.data.data_dir)
    self._phases = [(data1, seq1, pred1, config.train_batch_size)]
    if config.phase2_start_step:
      seq2, pred2 = (config.phase2_max_seq_length,
                     config.phase2_max_predictions_per_seq)
      data2 = prepare_data(config, workdir, seq2, pred2,
                           config.data.phase2_data_dir)
      self._phases.append((data2, seq2, pred2,
                           config.phase2_train_batch_size))
    self._manifest = [preflight(config, d, s, p)
                      for d, s, p, _ in self._phases][0]
    self._vocab_size = (self._manifest["vocab"]["size"] if self._manifest
                        else None)
    masking = eval_masking(config, self._manifest)
    if masking and masking["mask_ratios"] and not masking[
        "same_for_every_mask_variant"]:
      print(f"note: {data1}'s held-out split is masked "
            f"{masking['mask_ratios']} (data made before held-out masking "
            "was fixed at 80/10/10): its held-out MLM figures do not "
            "compare across mask_* variants; remake the data to compare",
            flush=True)
    self._vocab_file = (resolve_vocab(config, data1, self._manifest)
                        if self._manifest else config.data.vocab_file)

  @property
  def vocab_file(self) -> str:
    return self._vocab_file

  def model_config(self, vocab_size: int | None = None
                   ) -> model_lib.BertConfig:
    return model_config(self.config, vocab_size or self._vocab_size)

  def build_model(self, cfg, rngs):
    return make_model(cfg, self.objective, rngs)

  def loss(self, model, batch, rng, denominators=None):
    return forward_loss(model, batch, rng, self.objective, denominators)

  def denominators(self, batch):
    if self.objective == "ltr":
      w = jnp.sum(batch["input_mask"][:, 1:].astype(jnp.float32))
    else:
      w = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32))
    return w, jnp.asarray(batch["input_ids"].shape[0], jnp.float32)

  def summarize_train(self, sums):
    return summarize(sums, self.objective)

  def batch_spec(self, batch_size, seq_len, num_pred=None):
    return batch_spec(self.objective, batch_size, seq_len,
                      num_pred or self.config.max_predictions_per_seq)

  def num_train_steps(self) -> int:
    return self.config.num_train_steps

  def train_data(self, batch_sharding) -> base.TrainData:
    config = self.config
    iterators = [make_iterator(config, d, "train", b, s, p, batch_sharding)
                 for d, s, p, b in self._phases]
    switch = [config.phase2_start_step] if len(self._phases) > 1 else []
    it = input_pipeline.PhasedIterator(iterators, switch)

    def shape_at(step):
      _, seq, pred, batch = self._phases[it.phase_at(step)]
      return batch, seq, pred

    self._batch_sharding = batch_sharding
    self._phase_at = it.phase_at
    return base.TrainData(it, shape_at)

  def eval_outputs(self, model, batch):
    _, sums = forward_loss(model, batch, None, self.objective)
    return sums

  def evaluate(self, run_eval, step):
    # The held-out split of the phase the run is in.
    data_dir, seq, pred, _ = self._phases[self._phase_at(max(step - 1, 0))]
    config = self.config
    it = eval_iterator(config, data_dir, seq, pred, self._batch_sharding)
    import itertools  # pylint: disable=g-import-not-at-top
    try:
      outputs = run_eval(itertools.islice(it, config.num_eval_steps))
    finally:
      it.close()
    if not outputs:
      raise ValueError(f"{data_dir}: the eval split has fewer than "
                       f"{config.eval_batch_size} examples")
    return summarize(sum_outputs(outputs), self.objective)

  def results_header(self):
    header = {"variant": self.config.variant, "objective": self.objective}
    masking = eval_masking(self.config, self._manifest)
    if masking is not None:
      header["eval_masking"] = masking
    return header

  def finish(self, params, workdir, run_eval):
    del run_eval
    if not self.config.export:
      return {}
    # Every process joins the gather; process 0 writes.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
      return {}
    return {"checkpoints": export(self.model_config(), params,
                                  self.vocab_file, workdir)}


def export(cfg: model_lib.BertConfig, params, vocab_file: str,
           workdir: str) -> dict[str, str]:
  """The trained model in bert_jax (Orbax) and Hugging Face formats."""
  params = pretrained.jax_to_numpy(params)
  cfg = cfg.replace(dtype="float32")
  out = {}
  native = os.path.join(workdir, "export", "bert_jax")
  if os.path.exists(native):
    shutil.rmtree(native)
  out["bert_jax"] = pretrained.save_bert_jax(cfg, params, vocab_file, native)
  out["hf"] = pretrained.export_hf(cfg, params, vocab_file,
                                   os.path.join(workdir, "export", "hf"))
  return out
