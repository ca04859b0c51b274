"""Pre-training: the sharded train step and the training loop.

`train_and_evaluate(config, workdir)` is the whole job: validate the config
(before anything compiles), prepare data if missing, build the mesh, create
the train state born sharded (or resume it from the newest readable
checkpoint), run the jitted train step with donated state, evaluate
periodically on held-out data, checkpoint (also on SIGTERM), and at the end
export the model and write `results.json`.

The train state is a plain pytree {'step', 'params', 'opt_state', 'bad'}:
params are the nested dict of the model's nnx parameters; `bad` becomes
true at the first non-finite loss, after which updates are skipped, so the
state on the host is the last good one when the loop notices.

`make_train_step(config, mesh)` builds the step without any data, for
`bert_jax.plan` to compile against a TPU topology.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from bert_jax import checkpoints
from bert_jax import heads
from bert_jax import input_pipeline
from bert_jax import model as model_lib
from bert_jax import optimizer as optimizer_lib
from bert_jax import sharding

Array = jax.Array

# Peak dense bf16 FLOP/s per device, for MFU. TPU figures are per TensorCore
# as JAX counts devices (a v3 chip has two cores, 123 TFLOP/s in all).
PEAK_FLOPS = {
    "TPU v2": 22.5e12,
    "TPU v3": 61.5e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def peak_flops(device_kind: str) -> float | None:
  for name, flops in PEAK_FLOPS.items():
    if device_kind.startswith(name):
      return flops
  return None


# -- config -> objects -------------------------------------------------------

def model_config(config: ml_collections.ConfigDict,
                 vocab_size: int | None = None) -> model_lib.BertConfig:
  m = config.model
  overrides = dict(
      hidden_act=m.hidden_act, hidden_dropout_prob=m.hidden_dropout_prob,
      attention_dropout_prob=m.attention_dropout_prob, dtype=m.dtype,
      remat_policy=m.remat_policy, scan_layers=m.scan_layers,
      attention_impl=m.attention_impl or None,
      attention="causal" if config.objective == "ltr" else "bidirectional")
  if vocab_size:
    overrides["vocab_size"] = vocab_size
  return model_lib.BertConfig.from_preset(m.preset, **overrides)


def make_model(cfg: model_lib.BertConfig, objective: str, seed: int = 0):
  rngs = nnx.Rngs(seed)
  if objective == "ltr":
    return heads.BertForLTR(cfg, rngs=rngs)
  return heads.BertForPreTraining(cfg, nsp=objective == "mlm_nsp", rngs=rngs)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = optimizer_lib.learning_rate_schedule(
      config.learning_rate, config.num_warmup_steps, config.num_train_steps)
  o = config.optimizer
  tx = optimizer_lib.create_optimizer(
      o.name, schedule, b1=o.b1, b2=o.b2, eps=o.eps,
      weight_decay=o.weight_decay, clip_norm=o.clip_norm)
  return tx, schedule


def rules_of(config: ml_collections.ConfigDict):
  return tuple(tuple(r) for r in config.mesh.rules) or sharding.DEFAULT_RULES


def make_mesh(config: ml_collections.ConfigDict,
              devices=None) -> jax.sharding.Mesh:
  return sharding.create_mesh(tuple(config.mesh.ici_shape),
                              tuple(config.mesh.dcn_shape), devices)


def batch_spec(config, seq_len: int, num_pred: int, batch: int
               ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes and dtypes of one global batch for the config's objective."""
  spec = {
      "input_ids": ((batch, seq_len), jnp.int32),
      "input_mask": ((batch, seq_len), jnp.int32),
      "segment_ids": ((batch, seq_len), jnp.int32),
  }
  if config.objective != "ltr":
    spec.update(
        masked_lm_positions=((batch, num_pred), jnp.int32),
        masked_lm_ids=((batch, num_pred), jnp.int32),
        masked_lm_weights=((batch, num_pred), jnp.float32),
        next_sentence_labels=((batch, 1), jnp.int32))
  return spec


def model_flops_per_step(cfg: model_lib.BertConfig, batch: int, seq: int,
                         num_pred: int, objective: str) -> float:
  """Training FLOPs (forward + backward = 3x forward) by formula."""
  h, f, l_ = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  tokens = batch * seq
  per_token = l_ * (2 * 4 * h * h + 2 * 2 * h * f)  # QKVO + FFN matmuls
  attention = l_ * 2 * 2 * seq * h  # scores and weighted sum, per token
  positions = tokens if objective == "ltr" else batch * num_pred
  head = positions * (2 * h * h + 2 * h * cfg.vocab_size)
  pooler = batch * (2 * h * h + 2 * h * 2)
  return 3.0 * (tokens * (per_token + attention) + head + pooler)


# -- the step ----------------------------------------------------------------

def _forward_loss(graphdef, params, batch, rng, objective,
                  denominators=None):
  model = nnx.merge(graphdef, params)
  if objective == "ltr":
    out = model(batch["input_ids"], batch["segment_ids"],
                batch["input_mask"], rng=rng)
    return heads.ltr_loss(out, batch, denominators)
  out = model(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
              batch["masked_lm_positions"], rng=rng)
  return heads.pretraining_loss(out, batch, denominators)


def _denominators(batch, objective):
  """The full batch's normalisers, shared by its micro-batches."""
  if objective == "ltr":
    w = jnp.sum(batch["input_mask"][:, 1:].astype(jnp.float32))
  else:
    w = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32))
  return w, jnp.asarray(batch["input_ids"].shape[0], jnp.float32)


def train_step(state: dict[str, Any], batch: dict[str, Array], *, graphdef,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               objective: str, seed: int, accum_steps: int
               ) -> tuple[dict[str, Any], dict[str, Array]]:
  """One optimizer step (pure). Dropout keys come from fold_in(seed, step)."""
  step = state["step"]
  rng = jax.random.fold_in(jax.random.key(seed), step)
  if accum_steps == 1:
    grad_fn = jax.value_and_grad(
        lambda p, b, k: _forward_loss(graphdef, p, b, k, objective),
        has_aux=True)
    (loss, sums), grads = grad_fn(state["params"], batch, rng)
  else:
    # Micro-batch losses normalised by the whole batch add up to its loss,
    # so accumulation gives the full batch's gradient, not a mean of means.
    denominators = _denominators(batch, objective)
    grad_fn = jax.value_and_grad(
        lambda p, b, k: _forward_loss(graphdef, p, b, k, objective,
                                      denominators), has_aux=True)
    micro = jax.tree.map(
        lambda x: x.reshape(accum_steps, x.shape[0] // accum_steps,
                            *x.shape[1:]), batch)

    def body(carry, xs):
      mb, i = xs
      (l, s), g = grad_fn(state["params"], mb, jax.random.fold_in(rng, i))
      acc_l, acc_s, acc_g = carry
      return (acc_l + l, jax.tree.map(jnp.add, acc_s, s),
              jax.tree.map(jnp.add, acc_g, g)), None

    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    (l0, s0), _ = jax.eval_shape(grad_fn, state["params"],
                                 jax.tree.map(lambda x: x[0], micro), rng)
    init = (jnp.zeros((), jnp.float32),
            jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), s0), zeros)
    (loss, sums, grads), _ = jax.lax.scan(
        body, init, (micro, jnp.arange(accum_steps)))
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  ok = jnp.isfinite(loss) & ~state["bad"]
  # Skip the update on a non-finite loss and from then on: the host stops
  # at its next look and saves this, the last good state.
  keep = lambda new, old: jax.tree.map(
      lambda n, o: jnp.where(ok, n, o), new, old)
  new_state = {
      "step": jnp.where(ok, step + 1, step),
      "params": keep(params, state["params"]),
      "opt_state": keep(opt_state, state["opt_state"]),
      "bad": ~ok,
  }
  metrics = {
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": schedule(step),
      "first_bad_step": jnp.where(ok, jnp.iinfo(jnp.int32).max, step),
      **sums,
  }
  return new_state, metrics


def eval_step(params, batch, *, graphdef, objective: str) -> dict[str, Array]:
  _, sums = _forward_loss(graphdef, params, batch, None, objective)
  return sums


@dataclasses.dataclass
class StepFns:
  """What `make_train_step` returns: the jitted step and its shardings."""
  train_step: Any  # jitted (state, batch) -> (state, metrics)
  eval_step: Any  # jitted (params, batch) -> metric sums
  init: Any  # jitted () -> state, born sharded
  graphdef: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  model_config: model_lib.BertConfig
  schedule: optax.Schedule

  def abstract_batch(self, config, seq_len: int, num_pred: int,
                     batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
            for k, (shape, dtype) in batch_spec(config, seq_len, num_pred,
                                                batch).items()}


def make_train_step(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh,
                    vocab_size: int | None = None) -> StepFns:
  """The sharded, jitted train step for `config` on `mesh` (no data read)."""
  cfg = model_config(config, vocab_size)
  rules = rules_of(config)
  tx, schedule = make_optimizer(config)
  make = functools.partial(make_model, cfg, config.objective, config.seed)
  graphdef, abstract_params = nnx.split(nnx.eval_shape(make), nnx.Param)
  param_shardings = nnx.to_pure_dict(
      sharding.state_shardings(abstract_params, mesh, rules))
  abstract_params = nnx.to_pure_dict(abstract_params)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = sharding.replicated(mesh)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt, param_shardings,
      transform_non_params=lambda _: replicated)
  state_shardings = {"step": replicated, "params": param_shardings,
                     "opt_state": opt_shardings, "bad": replicated}

  def init():
    params = nnx.to_pure_dict(nnx.state(make(), nnx.Param))
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "bad": jnp.zeros((), bool)}

  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      jax.eval_shape(init), state_shardings)
  data_sharding = sharding.batch_sharding(mesh)
  step_fn = functools.partial(
      train_step, graphdef=graphdef, tx=tx, schedule=schedule,
      objective=config.objective, seed=config.seed,
      accum_steps=config.optimizer.grad_accum_steps)
  jit_train = jax.jit(step_fn, in_shardings=(state_shardings, data_sharding),
                      out_shardings=(state_shardings, replicated),
                      donate_argnums=(0,))
  jit_eval = jax.jit(functools.partial(eval_step, graphdef=graphdef,
                                       objective=config.objective),
                     in_shardings=(param_shardings, data_sharding),
                     out_shardings=replicated)
  jit_init = jax.jit(init, out_shardings=state_shardings)
  return StepFns(jit_train, jit_eval, jit_init, graphdef, abstract_state,
                 state_shardings, data_sharding, cfg, schedule)


# -- validation --------------------------------------------------------------

class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def validate(config: ml_collections.ConfigDict, workdir: str,
             mesh: jax.sharding.Mesh) -> None:
  """Fails fast, before any compilation, with one line naming the key."""
  def check(ok, msg):
    if not ok:
      raise ConfigError(msg)
  dp = sharding.data_parallel_size(mesh)
  for key in ("train_batch_size", "eval_batch_size",
              "phase2_train_batch_size"):
    value = config[key]
    check(value > 0 and value % dp == 0,
          f"config.{key}={value} is not divisible by the data-parallel size "
          f"{dp} of mesh {dict(mesh.shape)}")
    check(value % jax.process_count() == 0,
          f"config.{key}={value} is not divisible by the "
          f"{jax.process_count()} processes")
  accum = config.optimizer.grad_accum_steps
  check(accum >= 1 and config.train_batch_size % (accum * dp) == 0,
        f"config.optimizer.grad_accum_steps={accum}: train_batch_size="
        f"{config.train_batch_size} must split into {accum} micro-batches "
        f"divisible by the data-parallel size {dp}")
  check(config.objective in ("mlm_nsp", "mlm", "ltr"),
        f"config.objective={config.objective!r} not in mlm_nsp, mlm, ltr")
  try:
    cfg = model_config(config)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from e
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
  check(config.optimizer.name in optimizer_lib.OPTIMIZERS,
        f"config.optimizer.name={config.optimizer.name!r} not in "
        f"{optimizer_lib.OPTIMIZERS}")
  check(config.log_every_steps > 0, "config.log_every_steps must be > 0")
  check(config.save_checkpoints_steps > 0,
        "config.save_checkpoints_steps must be > 0")
  if not config.data.data_dir or not os.path.exists(
      os.path.join(config.data.data_dir, input_pipeline.MANIFEST)):
    import glob  # pylint: disable=g-import-not-at-top
    pattern = config.data.input_file
    check(bool(pattern) and all(
        glob.glob(p.strip()) for p in pattern.split(",")
        if not p.strip().startswith("tfds:")),
          f"config.data.input_file={pattern!r} matches no file (and "
          f"config.data.data_dir={config.data.data_dir!r} holds no prepared "
          "data)")
    check(os.path.exists(config.data.vocab_file),
          f"config.data.vocab_file={config.data.vocab_file!r} does not exist")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable ({e})") from e


# -- data --------------------------------------------------------------------

def prepare_data(config, workdir: str, seq_len: int, num_pred: int,
                 data_dir: str) -> str:
  """Creates the shards (process 0) unless data_dir already has them."""
  from bert_jax import create_pretraining_data as cpd  # pylint: disable=g-import-not-at-top
  from bert_jax import pretraining_data  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or os.path.join(workdir, f"data_{seq_len}")
  if (jax.process_index() == 0 and not os.path.exists(
      os.path.join(data_dir, input_pipeline.MANIFEST))):
    d = config.data
    opts = pretraining_data.DataOptions(
        max_seq_length=seq_len, max_predictions_per_seq=num_pred,
        masked_lm_prob=d.masked_lm_prob, short_seq_prob=d.short_seq_prob,
        dupe_factor=d.dupe_factor, objective=config.objective,
        mask_ratios=tuple(d.mask_ratios), whole_word_mask=d.whole_word_mask,
        dynamic_masking=d.dynamic_masking)
    logging.info("preparing pre-training data in %s", data_dir)
    m = cpd.create_pretraining_data(
        d.input_file, data_dir, d.vocab_file, d.do_lower_case, opts=opts,
        random_seed=config.seed, num_workers=d.num_workers,
        num_shards=d.num_shards, eval_fraction=d.eval_fraction)
    print(f"prepared {m['train']['instances']} training and "
          f"{m.get('eval', {}).get('instances', 0)} held-out examples in "
          f"{m['seconds']} s", flush=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("prepare_data")
  return data_dir


def _masking_spec(config, manifest, num_pred):
  if manifest is None or manifest["options"]["masking"] != "dynamic":
    return None
  v = manifest["vocab"]
  return input_pipeline.MaskingSpec(
      vocab_size=v["size"], mask_id=v["mask_id"],
      special_ids=(v["cls_id"], v["sep_id"], v["pad_id"]),
      masked_lm_prob=config.data.masked_lm_prob,
      max_predictions_per_seq=num_pred,
      mask_ratios=tuple(config.data.mask_ratios),
      whole_word_mask=config.data.whole_word_mask)


def make_iterator(config, data_dir: str, split: str, batch: int, seq_len: int,
                  num_pred: int, batch_sharding, *, shuffle=True,
                  num_epochs=None) -> input_pipeline.GlobalBatchIterator:
  manifest = input_pipeline.read_manifest(data_dir)
  ds = input_pipeline.make_dataset(
      input_pipeline.find_shards(data_dir, split), global_batch_size=batch,
      seed=config.seed, max_seq_length=seq_len, shuffle=shuffle,
      num_epochs=num_epochs,
      dynamic_masking=_masking_spec(config, manifest, num_pred))
  return input_pipeline.GlobalBatchIterator(ds, batch_sharding)


# -- the loop ----------------------------------------------------------------

class _Writer:
  """TensorBoard scalars (process 0 only)."""

  def __init__(self, logdir: str):
    self._w = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._w = SummaryWriter(logdir)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self._w is not None:
      for k, v in values.items():
        self._w.add_scalar(k, v, step)
      self._w.flush()

  def close(self) -> None:
    if self._w is not None:
      self._w.close()


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


def evaluate(fns: StepFns, params, config, data_dir: str, seq_len: int,
             num_pred: int) -> dict[str, float]:
  it = make_iterator(config, data_dir, "eval", config.eval_batch_size,
                     seq_len, num_pred, fns.batch_sharding, shuffle=False,
                     num_epochs=1)
  total = None
  with sharding.activation_rules(fns.batch_sharding.mesh, rules_of(config)):
    for _, batch in zip(range(config.num_eval_steps), it):
      sums = fns.eval_step(params, batch)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
  it.close()
  if total is None:
    raise ValueError(f"{data_dir}: the eval split has fewer than "
                     f"{config.eval_batch_size} examples")
  return summarize({k: float(v) for k, v in jax.device_get(total).items()},
                   config.objective)


class NonFiniteLossError(RuntimeError):
  pass


def _should_stop(watcher: checkpoints.PreemptionWatcher,
                 ckpt: checkpoints.Checkpointer, step: int,
                 every: int) -> bool:
  """Whether to save and stop now; the same answer on every process."""
  # TPU maintenance events reach all hosts through the coordination service.
  if ckpt.reached_preemption(step):
    return True
  if jax.process_count() == 1:
    return watcher.requested
  # A SIGTERM may reach one host only; the others must join its save, so
  # the hosts agree (one tiny collective) once per log period.
  if step % every:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.int32(watcher.requested))
  return bool(np.any(flags))


def _config_json(config) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Runs the pre-training job; returns (and writes) results.json."""
  workdir = os.path.abspath(workdir)
  mesh = make_mesh(config)
  validate(config, workdir, mesh)
  seq1, pred1 = config.max_seq_length, config.max_predictions_per_seq
  data1 = prepare_data(config, workdir, seq1, pred1, config.data.data_dir)
  manifest = input_pipeline.read_manifest(data1)
  vocab_size = manifest["vocab"]["size"] if manifest else None
  fns = make_train_step(config, mesh, vocab_size)
  phases = [(data1, seq1, pred1, config.train_batch_size)]
  switch = []
  if config.phase2_start_step:
    seq2, pred2 = (config.phase2_max_seq_length,
                   config.phase2_max_predictions_per_seq)
    data2 = prepare_data(config, workdir, seq2, pred2,
                         config.data.phase2_data_dir)
    phases.append((data2, seq2, pred2, config.phase2_train_batch_size))
    switch.append(config.phase2_start_step)
  iterators = [make_iterator(config, d, "train", b, s, p, fns.batch_sharding)
               for d, s, p, b in phases]
  data_iter = input_pipeline.PhasedIterator(iterators, switch)

  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=config.keep_checkpoints)
  restored = ckpt.restore_latest(fns.abstract_state)
  with sharding.activation_rules(mesh, rules_of(config)):
    if restored is None:
      state = fns.init()
      start = 0
    else:
      start, state, data_state = restored
      data_iter.set_state(data_state)
      # A run stopped by a non-finite loss saved its last good state with
      # the flag up; resuming (say with a lower learning rate) clears it.
      state["bad"] = jax.device_put(np.bool_(False),
                                    fns.state_shardings["bad"])
      logging.info("resumed from step %d", start)
      print(f"resumed from the checkpoint at step {start}", flush=True)

  writer = _Writer(os.path.join(workdir, "tensorboard"))
  watcher = checkpoints.PreemptionWatcher()
  config_json = _config_json(config)
  device_kind = jax.devices()[0].device_kind
  peak = peak_flops(device_kind)
  pending: list[dict[str, Array]] = []
  t_last, step_last = time.time(), start
  t_start = time.time()
  examples_done = 0
  step = start
  total = config.num_train_steps
  is_main = jax.process_index() == 0

  # The input state before each step of the current log period: a run that
  # meets a non-finite loss saves the state from before that step.
  data_states: list[dict[str, Any]] = []

  def stop_if_bad(host_metrics=None):
    """After a non-finite loss: save the last good state and stop."""
    if host_metrics is None:
      if not bool(jax.device_get(state["bad"])):
        return
      host_metrics = jax.device_get(pending)
    bad = min(int(m["first_bad_step"]) for m in host_metrics)
    if bad == np.iinfo(np.int32).max:
      return
    # The step counter stopped at the first bad step (no update applied),
    # so the state is the one after step `bad - 1`: label it `bad`.
    if bad not in ckpt.all_steps():  # else: resumed from it, failed again
      ckpt.save(bad, state, data_states[bad - (step - len(data_states))],
                config_json, force=True)
      ckpt.wait()
    raise NonFiniteLossError(
        f"non-finite loss at step {bad}; the checkpoint at step {bad} in "
        f"{ckpt.directory} holds the last good state")

  saved_at = [start]  # the newest checkpoint's step (0: none yet)

  def save(s, force=False):
    if s == saved_at[0]:
      return  # e.g. a periodic save step that is also the last or preempted
    stop_if_bad()  # never checkpoint a state that stopped learning
    ckpt.save(s, state, data_iter.get_state(), config_json, force=force)
    saved_at[0] = s

  try:
    while step < total:
      phase = data_iter.phase_at(step)
      _, seq, pred, batch_size = phases[phase]
      data_states.append(data_iter.get_state())
      batch = next(data_iter)
      with sharding.activation_rules(mesh, rules_of(config)):
        state, metrics = fns.train_step(state, batch)
      step += 1
      examples_done += batch_size
      pending.append(metrics)
      if step % config.log_every_steps == 0 or step == total:
        host = jax.device_get(pending)  # the one sync per log period
        stop_if_bad(host)
        pending, data_states = [], []
        sums = {k: float(sum(m[k] for m in host)) for k in host[0]
                if k.endswith(("_sum", "_correct", "_weight", "_count"))}
        train = summarize(sums, config.objective)
        now = time.time()
        rate = (step - step_last) * batch_size / (now - t_last)
        tokens_per_s = rate * seq
        flops = model_flops_per_step(fns.model_config, batch_size, seq,
                                     pred, config.objective)
        mfu = (flops * (step - step_last) / (now - t_last)
               / (peak * jax.device_count())) if peak else None
        scalars = {f"train/{k}": v for k, v in train.items()}
        scalars.update({
            "train/loss": float(np.mean([m["loss"] for m in host])),
            "train/grad_norm": float(host[-1]["grad_norm"]),
            "train/learning_rate": float(host[-1]["learning_rate"]),
            "perf/examples_per_second": rate,
            "perf/tokens_per_second": tokens_per_s,
        })
        if mfu is not None:
          scalars["perf/mfu"] = mfu
        writer.scalars(step, scalars)
        eta = (total - step) * (now - t_last) / max(step - step_last, 1)
        if is_main:
          acc_key = ("lm_accuracy" if config.objective == "ltr"
                     else "masked_lm_accuracy")
          print(f"step {step}/{total}  loss {scalars['train/loss']:.4f}  "
                f"{acc_key} {train[acc_key]:.3f}  "
                f"lr {scalars['train/learning_rate']:.2e}  "
                f"{rate:.1f} ex/s  "
                + (f"mfu {mfu:.1%}  " if mfu is not None else "")
                + f"ETA {eta / 60:.1f} min", flush=True)
        t_last, step_last = now, step
      if step % config.eval_every_steps == 0 and step < total:
        ev = evaluate(fns, state["params"], config, phases[phase][0], seq,
                      pred)
        writer.scalars(step, {f"eval/{k}": v for k, v in ev.items()})
        if is_main:
          print("eval at step {}: {}".format(step, "  ".join(
              f"{k} {v:.4f}" for k, v in ev.items())), flush=True)
      if step % config.save_checkpoints_steps == 0:
        save(step)
      if _should_stop(watcher, ckpt, step, config.log_every_steps):
        save(step, force=True)
        ckpt.wait()
        print(f"preempted: checkpoint saved at step {step}", flush=True)
        return {"preempted_at_step": step}
    save(step, force=True)
    ckpt.wait()
  finally:
    watcher.close()
    writer.close()
    data_iter.close()

  elapsed = time.time() - t_start
  data_dir, seq, pred, _ = phases[-1]
  final = evaluate(fns, state["params"], config, data_dir, seq, pred)
  writer = _Writer(os.path.join(workdir, "tensorboard"))
  writer.scalars(step, {f"eval/{k}": v for k, v in final.items()})
  writer.close()
  results: dict[str, Any] = {
      "variant": config.variant,
      "objective": config.objective,
      "steps": step,
      "examples_per_second": examples_done / elapsed if examples_done else 0,
      "train_seconds": round(elapsed, 1),
      "device_kind": device_kind,
      "num_devices": jax.device_count(),
      **final,
  }
  if config.export:
    # Every process joins the gather; process 0 writes.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(state["params"], tiled=True)
    if is_main:
      results["checkpoints"] = export(fns, params, config, workdir, manifest)
  ckpt.close()
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results


def export(fns: StepFns, params, config, workdir: str,
           manifest) -> dict[str, str]:
  """The trained model in bert_jax (Orbax) and Hugging Face formats."""
  from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
  params = pretrained.jax_to_numpy(params)
  cfg = fns.model_config.replace(dtype="float32")
  vocab = manifest["vocab"]["file"] if manifest else config.data.vocab_file
  out = {}
  native = os.path.join(workdir, "export", "bert_jax")
  if os.path.exists(native):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(native)
  out["bert_jax"] = pretrained.save_bert_jax(cfg, params, vocab, native)
  out["hf"] = pretrained.export_hf(cfg, params, vocab,
                                os.path.join(workdir, "export", "hf"))
  return out
