"""The training loop: one sharded, resumable loop for every task.

`train_and_evaluate(config, workdir)` runs a job: the task named by the
config (`bert_jax.tasks.from_config`: pre-training, or a fine-tuning task)
supplies the model, data, loss and metrics; this module validates the
config (before anything compiles), builds the mesh, creates the train state
born sharded (starting from the task's pre-trained weights, or resuming
from the newest readable checkpoint), runs the jitted train step with
donated state, evaluates, checkpoints (also on SIGTERM), and at the end
lets the task write its predictions / exports and writes `results.json`.

The train state is a plain pytree {'step', 'params', 'opt_state', 'bad',
'skipped'}: params are the nested dict of the model's nnx parameters. A
step whose loss or gradient is not finite applies no update: while fewer
than `config.max_bad_batches` batches have been skipped (`skipped`), it
skips the batch and goes on; otherwise `bad` becomes true and every later
update is skipped too, so the state on the host is the last good one when
the loop notices. The loop then names the step and the first non-finite
tensor (`bert_jax.numerics`), saves that state and stops.

Each checkpoint records the run's identity (`run_identity`: model shape,
vocabulary, objective, batch layout); a workdir whose checkpoint another
config wrote is a ConfigError before the first step (and before anything
in the workdir is rewritten).

`make_train_step(config, mesh)` builds the step without any data, for
`bert_jax.plan` to compile against a TPU topology.

Every run writes `WORKDIR/bert_config.json` and a copy of its vocabulary
at the start, so that a workdir can serve as a pre-trained model
(`bert_jax.pretrained`'s 'workdir' format).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from bert_jax import checkpoints
from bert_jax import manifest as manifest_lib
from bert_jax import model as model_lib
from bert_jax import numerics
from bert_jax import optimizer as optimizer_lib
from bert_jax import pretrained
from bert_jax import sharding
from bert_jax import storage
from bert_jax import tasks
from bert_jax.tasks import base as tasks_base

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

def make_optimizer(config: ml_collections.ConfigDict,
                   num_train_steps: int | None = None,
                   num_warmup_steps: int | None = None,
                   frozen: tuple[str, ...] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """BERT's optimizer and schedule; steps default to the config's.

  `frozen`: top-level parameter sub-trees the optimizer leaves untouched.
  """
  schedule = optimizer_lib.learning_rate_schedule(
      config.learning_rate,
      config.num_warmup_steps if num_warmup_steps is None
      else num_warmup_steps,
      config.num_train_steps if num_train_steps is None else num_train_steps)
  o = config.optimizer
  tx = optimizer_lib.create_optimizer(
      o.name, schedule, b1=o.b1, b2=o.b2, eps=o.eps,
      weight_decay=o.weight_decay, clip_norm=o.clip_norm)
  return optimizer_lib.freeze(tx, frozen), schedule


def rules_of(config: ml_collections.ConfigDict):
  return tuple(tuple(r) for r in config.mesh.rules) or sharding.DEFAULT_RULES


def make_mesh(config: ml_collections.ConfigDict,
              devices=None) -> jax.sharding.Mesh:
  """The config's mesh; one that does not divide the devices is a
  ConfigError naming the keys."""
  try:
    return sharding.create_mesh(tuple(config.mesh.ici_shape),
                                tuple(config.mesh.dcn_shape), devices)
  except ValueError as e:
    raise ConfigError(
        f"config.mesh.ici_shape={tuple(config.mesh.ici_shape)}, "
        f"config.mesh.dcn_shape={tuple(config.mesh.dcn_shape)}: {e}") from e


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

def _forward_loss(graphdef, params, batch, rng, task, denominators=None):
  return task.loss(nnx.merge(graphdef, params), batch, rng, denominators)


def train_step(state: dict[str, Any], batch: dict[str, Array], *, graphdef,
               task: tasks_base.Task, tx: optax.GradientTransformation,
               schedule: optax.Schedule, seed: int, accum_steps: int,
               max_bad_batches: int = 0
               ) -> tuple[dict[str, Any], dict[str, Array]]:
  """One optimizer step (pure). Dropout keys come from fold_in(seed, step)."""
  step = state["step"]
  rng = jax.random.fold_in(jax.random.key(seed), step)
  if accum_steps == 1:
    grad_fn = jax.value_and_grad(
        lambda p, b, k: _forward_loss(graphdef, p, b, k, task), has_aux=True)
    (loss, sums), grads = grad_fn(state["params"], batch, rng)
  else:
    # Micro-batch losses normalised by the whole batch add up to its loss,
    # so accumulation gives the full batch's gradient, not a mean of means.
    denominators = task.denominators(batch)
    grad_fn = jax.value_and_grad(
        lambda p, b, k: _forward_loss(graphdef, p, b, k, task, denominators),
        has_aux=True)
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
  grad_norm = optax.tree.norm(grads)
  # A finite loss can still have an infinite gradient, which clipping
  # turns into NaN parameters: both must be finite.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  ok = finite & ~state["bad"]
  # A bad batch within the budget is skipped (the step counts, nothing is
  # applied); past it, no update is applied from then on: the host stops
  # at its next look and saves this, the last good state.
  skip = ~finite & ~state["bad"] & (state["skipped"] < max_bad_batches)
  bad = ~ok & ~skip
  keep = lambda new, old: jax.tree.map(
      lambda n, o: jnp.where(ok, n, o), new, old)
  new_state = {
      "step": jnp.where(ok | skip, step + 1, step),
      "params": keep(params, state["params"]),
      "opt_state": keep(opt_state, state["opt_state"]),
      "bad": bad,
      "skipped": state["skipped"] + skip.astype(jnp.int32),
  }
  metrics = {
      "loss": loss,
      "grad_norm": grad_norm,
      "learning_rate": schedule(step),
      "first_bad_step": jnp.where(bad, step, jnp.iinfo(jnp.int32).max),
      "skipped_step": jnp.where(skip, step, -1),
      **sums,
  }
  return new_state, metrics


def eval_step(params, batch, *, graphdef, task: tasks_base.Task
              ) -> dict[str, Array]:
  return task.eval_outputs(nnx.merge(graphdef, params), batch)


@dataclasses.dataclass
class StepFns:
  """What `make_train_step` returns: the jitted step and its shardings."""
  train_step: Any  # jitted (state, batch) -> (state, metrics)
  eval_step: Any  # jitted (params, batch) -> outputs, replicated
  init: Any  # () -> state, born sharded (from the task's pre-trained weights)
  graphdef: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  model_config: model_lib.BertConfig
  schedule: optax.Schedule
  task: tasks_base.Task
  # (params, batch, step) -> the step's loss, unjitted: for `numerics`
  loss_fn: Any = None

  def abstract_batch(self, config, seq_len: int, num_pred: int,
                     batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    del config
    spec = (self.task.batch_spec(batch, seq_len, num_pred)
            if num_pred else self.task.batch_spec(batch, seq_len))
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
            for k, (shape, dtype) in spec.items()}


def _by_path(tree) -> dict[str, Any]:
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_pretrained(abstract_params, pre: Mapping[str, Any]) -> None:
  """The pre-trained sub-trees must fit the model exactly."""
  problems = []
  for key, tree in pre.items():
    if key not in abstract_params:
      problems.append(f"{key}: the model has no such part")
      continue
    want, have = _by_path(abstract_params[key]), _by_path(tree)
    problems += [f"{key}/{k}: missing" for k in want if k not in have]
    problems += [f"{key}/{k}: unexpected" for k in have if k not in want]
    problems += [f"{key}/{k}: shape {tuple(np.shape(have[k]))}, the model "
                 f"needs {tuple(want[k].shape)}" for k in want
                 if k in have and tuple(np.shape(have[k])) != tuple(
                     want[k].shape)]
  if problems:
    raise ConfigError("the pre-trained weights do not fit the model ("
                      f"{len(problems)} problems): " + "; ".join(problems[:8])
                      + (" ..." if len(problems) > 8 else ""))


def make_train_step(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh,
                    vocab_size: int | None = None,
                    task: tasks_base.Task | None = None) -> StepFns:
  """The sharded, jitted train step for `config` on `mesh` (no data read).

  `vocab_size` overrides a pre-training config's vocabulary size (e.g. from
  its data manifest).
  """
  task = task or tasks.from_config(config)
  cfg = task.model_config(vocab_size) if vocab_size else task.model_config()
  rules = rules_of(config)
  frozen = task.frozen_params()
  tx, schedule = make_optimizer(config, task.num_train_steps(),
                                task.num_warmup_steps(), frozen)
  make = lambda: task.build_model(cfg, nnx.Rngs(config.seed))
  graphdef, abstract_params = nnx.split(nnx.eval_shape(make), nnx.Param)
  param_shardings = nnx.to_pure_dict(
      sharding.state_shardings(abstract_params, mesh, rules))
  abstract_params = nnx.to_pure_dict(abstract_params)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = sharding.replicated(mesh)
  # (A frozen part has no optimizer state: see optimizer.freeze.)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt,
      optimizer_lib.trained_part(param_shardings, frozen),
      transform_non_params=lambda _: replicated)
  state_shardings = {"step": replicated, "params": param_shardings,
                     "opt_state": opt_shardings, "bad": replicated,
                     "skipped": replicated}

  def init(pre):
    params = nnx.to_pure_dict(nnx.state(make(), nnx.Param))
    for key, tree in pre.items():  # the pre-trained parts replace fresh ones
      params[key] = jax.tree.map(lambda fresh, x: x.astype(fresh.dtype),
                                 params[key], tree)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "bad": jnp.zeros((), bool),
            "skipped": jnp.zeros((), jnp.int32)}

  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      jax.eval_shape(init, {}), state_shardings)
  data_sharding = sharding.batch_sharding(mesh)
  step_fn = functools.partial(
      train_step, graphdef=graphdef, task=task, tx=tx, schedule=schedule,
      seed=config.seed, accum_steps=config.optimizer.grad_accum_steps,
      max_bad_batches=config.get("max_bad_batches", 0))
  jit_train = jax.jit(step_fn, in_shardings=(state_shardings, data_sharding),
                      out_shardings=(state_shardings, replicated),
                      donate_argnums=(0,))
  jit_eval = jax.jit(functools.partial(eval_step, graphdef=graphdef,
                                       task=task),
                     in_shardings=(param_shardings, data_sharding),
                     out_shardings=replicated)

  def born_sharded():
    # Read lazily: plan compiles without ever loading a checkpoint.
    pre = task.pretrained_params() or {}
    _check_pretrained(abstract_params, pre)
    shardings = {k: param_shardings[k] for k in pre}
    pre = sharding.to_global(pre, shardings)
    return jax.jit(init, in_shardings=(shardings,),
                   out_shardings=state_shardings)(pre)

  def loss_fn(params, batch, step):
    # The step's loss on the whole batch (micro-batches add up to it).
    rng = jax.random.fold_in(jax.random.key(config.seed), step)
    return _forward_loss(graphdef, params, batch, rng, task)[0]

  return StepFns(jit_train, jit_eval, born_sharded, graphdef, abstract_state,
                 state_shardings, data_sharding, cfg, schedule, task,
                 loss_fn)


# -- what a checkpoint must share with a run resuming from it --------------

# The config keys that fix what each step's batch holds: a checkpoint's
# input position means nothing to a run that cuts batches differently.
BATCH_LAYOUT_KEYS = ("train_batch_size", "max_seq_length",
                     "max_predictions_per_seq", "phase2_start_step",
                     "phase2_train_batch_size", "phase2_max_seq_length",
                     "phase2_max_predictions_per_seq")
# BertConfig fields a resumed run may change: numerics and regularisation,
# not the parameters nor the function they compute.
_RESUMABLE_MODEL_FIELDS = ("dtype", "remat_policy", "attention_impl",
                           "hidden_dropout_prob", "attention_dropout_prob",
                           "initializer_range")


def run_identity(config: ml_collections.ConfigDict, fns: StepFns,
                 vocab_file: str | None) -> dict[str, Any]:
  """What a checkpoint records of its run and a resuming run must match.

  JSON, independent of the mesh: the task and objective, the model
  (architecture fields of its BertConfig, and every parameter's shape),
  the vocabulary (size and sha256) and the batch layout.
  """
  model = {k: v for k, v in dataclasses.asdict(fns.model_config).items()
           if k not in _RESUMABLE_MODEL_FIELDS}
  vocab = {"size": fns.model_config.vocab_size}
  if vocab_file and os.path.isfile(vocab_file):
    vocab["sha256"] = manifest_lib.sha256(vocab_file)
  layout = {k: config[k] for k in BATCH_LAYOUT_KEYS if k in config
            and (not k.startswith("phase2_") or config.get(
                "phase2_start_step"))}
  return {
      "task": config.get("task", "pretraining"),
      "objective": getattr(fns.task, "objective", None),
      "model": model,
      "vocab": vocab,
      "batch": layout,
      "params": {k: list(v.shape) for k, v in _by_path(
          fns.abstract_state["params"]).items()},
  }


# -- validation --------------------------------------------------------------

ConfigError = tasks_base.ConfigError


def _check(ok: bool, msg: str) -> None:
  if not ok:
    raise ConfigError(msg)


def validate(config: ml_collections.ConfigDict, workdir: str,
             mesh: jax.sharding.Mesh,
             task: tasks_base.Task | None = None) -> None:
  """Fails fast, before any compilation, with one line naming the key."""
  task = task or tasks.from_config(config)
  dp = sharding.data_parallel_size(mesh)
  for key in ("train_batch_size", "eval_batch_size",
              "phase2_train_batch_size"):
    if key not in config:
      continue
    value = config[key]
    _check(value > 0 and value % dp == 0,
           f"config.{key}={value} is not divisible by the data-parallel "
           f"size {dp} of mesh {dict(mesh.shape)}")
    _check(value % jax.process_count() == 0,
           f"config.{key}={value} is not divisible by the "
           f"{jax.process_count()} processes")
  accum = config.optimizer.grad_accum_steps
  _check(accum >= 1 and config.train_batch_size % (accum * dp) == 0,
         f"config.optimizer.grad_accum_steps={accum}: train_batch_size="
         f"{config.train_batch_size} must split into {accum} micro-batches "
         f"divisible by the data-parallel size {dp}")
  _check(config.optimizer.name in optimizer_lib.OPTIMIZERS,
         f"config.optimizer.name={config.optimizer.name!r} not in "
         f"{optimizer_lib.OPTIMIZERS}")
  _check(config.log_every_steps > 0, "config.log_every_steps must be > 0")
  _check(config.save_checkpoints_steps > 0,
         "config.save_checkpoints_steps must be > 0")
  _check(config.eval_every_steps >= 0,
         "config.eval_every_steps must be >= 0 (0: only at the end)")
  _check(config.get("max_bad_batches", 0) >= 0,
         "config.max_bad_batches must be >= 0")
  task.validate(_check)
  try:
    storage.makedirs(workdir)
    probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
    storage.write_text(probe, "ok")
    storage.remove(probe)
  except OSError as e:  # gcsfs raises OSError subclasses too
    raise ConfigError(f"--workdir={workdir} is not writable ({e})") from e


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


def _write_model_files(workdir: str, cfg: model_lib.BertConfig,
                      vocab_file: str | None) -> None:
  """bert_config.json + the vocabulary: the workdir is a loadable model."""
  if jax.process_index() != 0:
    return
  config = cfg.to_json_dict() | {"bert_jax": dataclasses.asdict(cfg)}
  with storage.Staging(workdir) as stage:
    storage.write_text(os.path.join(stage.local, "bert_config.json"),
                       json.dumps(config, indent=2))
    if vocab_file and os.path.exists(vocab_file):
      pretrained.copy_vocab(vocab_file, stage.local)
    stage.publish(None)


def _eval_runner(fns: StepFns, mesh, config, params) -> tasks_base.RunEval:
  """What a task's `evaluate` calls: batches in, host outputs out."""
  def run(batches: Iterator[dict[str, Array]]) -> list[dict[str, np.ndarray]]:
    outputs = []
    with sharding.activation_rules(mesh, rules_of(config)):
      for batch in batches:
        outputs.append(fns.eval_step(params, batch))
    return jax.device_get(outputs)
  return run


def _print_metrics(prefix: str, metrics: Mapping[str, Any]) -> None:
  if jax.process_index() == 0:
    print(prefix + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                             if isinstance(v, float)), flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Runs the job; returns (and writes) results.json."""
  workdir = storage.abspath(workdir)  # a local path or a gs:// URL
  task = tasks.from_config(config)
  mesh = make_mesh(config)
  validate(config, workdir, mesh, task)
  task.prepare(workdir)
  fns = make_train_step(config, mesh, task=task)
  vocab_file = getattr(task, "vocab_file", None)
  identity = run_identity(config, fns, vocab_file)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=config.keep_checkpoints)
  try:
    # Before anything in the workdir is rewritten.
    ckpt.check_latest(identity)
  except checkpoints.IncompatibleCheckpointError as e:
    raise ConfigError(str(e)) from e
  _write_model_files(workdir, fns.model_config, vocab_file)
  train_data = task.train_data(fns.batch_sharding)
  data_iter = train_data.iterator
  run_eval = functools.partial(_eval_runner, fns, mesh, config)

  try:
    restored = ckpt.restore_latest(fns.abstract_state, identity)
  except checkpoints.IncompatibleCheckpointError as e:
    raise ConfigError(str(e)) from e
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
  objective = getattr(task, "objective", "finetune")
  pending: list[dict[str, Array]] = []
  t_last, step_last = time.time(), start
  t_start = time.time()
  examples_done = 0
  step = start
  total = task.num_train_steps()
  is_main = jax.process_index() == 0

  # The input state before each step of the current log period: a run that
  # meets a non-finite loss saves the state from before that step.
  data_states: list[dict[str, Any]] = []

  max_bad = config.get("max_bad_batches", 0)

  def stop_if_bad(host_metrics=None):
    """After a non-finite loss: save the last good state and stop."""
    if host_metrics is None:
      if not bool(jax.device_get(state["bad"])):
        return
      host_metrics = jax.device_get(pending)
    for m in host_metrics:
      if int(m["skipped_step"]) >= 0:
        logging.warning("non-finite loss or gradient at step %d: batch "
                        "skipped (config.max_bad_batches=%d)",
                        int(m["skipped_step"]), max_bad)
    bad = min(int(m["first_bad_step"]) for m in host_metrics)
    if bad == np.iinfo(np.int32).max:
      return
    # The step counter stopped at the first bad step (no update applied),
    # so the state is the one after step `bad - 1`: label it `bad`.
    data_before = data_states[bad - (step - len(data_states))]
    if bad not in ckpt.all_steps():  # else: resumed from it, failed again
      ckpt.save(bad, state, data_before, config_json, force=True,
                identity=identity)
      ckpt.wait()
    where = _first_non_finite(bad, data_before)
    raise NonFiniteLossError(
        f"non-finite loss at step {bad}"
        + (f" ({where})" if where else "")
        + (f", after skipping {max_bad} bad batches" if max_bad else "")
        + f"; the checkpoint at step {bad} in {ckpt.directory} holds the "
        "last good state")

  def _first_non_finite(bad, data_before):
    """The bad batch again, through a checked pass on the last good state."""
    try:
      data_iter.set_state(data_before)
      batch = next(data_iter)
      with sharding.activation_rules(mesh, rules_of(config)):
        return numerics.first_non_finite(
            fns.loss_fn, {"params": state["params"], "batch": batch,
                          "step": np.int32(bad)},
            trace_ops=config.get("trace_non_finite", False))
    except Exception as e:  # pylint: disable=broad-except
      # A diagnosis that fails must not hide the stop itself.
      logging.warning("could not find the first non-finite value: %s", e)
      return None

  saved_at = [start]  # the newest checkpoint's step (0: none yet)

  def save(s, force=False):
    if s == saved_at[0]:
      return  # e.g. a periodic save step that is also the last or preempted
    stop_if_bad()  # never checkpoint a state that stopped learning
    ckpt.save(s, state, data_iter.get_state(), config_json, force=force,
              identity=identity)
    saved_at[0] = s

  try:
    while step < total:
      batch_size, seq, pred = train_data.shape_at(step)
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
        train = task.summarize_train(sums)
        now = time.time()
        rate = (step - step_last) * batch_size / (now - t_last)
        tokens_per_s = rate * seq
        flops = model_flops_per_step(fns.model_config, batch_size, seq,
                                     pred, objective)
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
          key = task.progress_metric
          shown = (f"{key} {train[key]:.3f}  " if key in train else "")
          print(f"step {step}/{total}  loss {scalars['train/loss']:.4f}  "
                + shown
                + f"lr {scalars['train/learning_rate']:.2e}  "
                f"{rate:.1f} ex/s  "
                + (f"mfu {mfu:.1%}  " if mfu is not None else "")
                + f"ETA {eta / 60:.1f} min", flush=True)
        t_last, step_last = now, step
      if step % config.save_checkpoints_steps == 0:
        save(step)
      if (config.eval_every_steps and step % config.eval_every_steps == 0
          and step < total):
        if saved_at[0] == step:
          # This step's checkpoint is committed before evaluation starts:
          # an evaluation that fails (out of memory, bad data) loses nothing.
          ckpt.wait()
        ev = task.evaluate(run_eval(state["params"]), step)
        writer.scalars(step, {f"eval/{k}": v for k, v in ev.items()
                              if isinstance(v, float)})
        _print_metrics(f"eval at step {step}: ", ev)
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
  final = task.evaluate(run_eval(state["params"]), step)
  writer = _Writer(os.path.join(workdir, "tensorboard"))
  writer.scalars(step, {f"eval/{k}": v for k, v in final.items()
                        if isinstance(v, float)})
  writer.close()
  results: dict[str, Any] = {
      **task.results_header(),
      "steps": step,
      "examples_per_second": examples_done / elapsed if examples_done else 0,
      "train_seconds": round(elapsed, 1),
      "device_kind": device_kind,
      "num_devices": jax.device_count(),
      **final,
  }
  with storage.Staging(workdir) as stage:  # for local-only writers
    results.update(stage.publish(task.finish(state["params"], stage.local,
                                             run_eval(state["params"]))))
  ckpt.close()
  if is_main:
    storage.write_text(os.path.join(workdir, "results.json"),
                       json.dumps(results, indent=2))
  return results
