"""Plans a TPU v3 pod run on a machine without a TPU: memory, time, cost.

    python -m bert_jax.plan --config=configs/pretrain.py:large --topology=v3-32 \
        [--search] [--recipe] [--json] [--price_per_chip_hour=P] \
        [--spot_price_per_chip_hour=P] [--config.KEY=VALUE ...]

Compiles the real sharded train step (`train.make_train_step`, the one the
job runs) ahead of time for the TPU topology with libtpu on this CPU
machine, and reports per-core memory against a v3 core's 16 GiB of HBM,
FLOPs per step and compile time. `--search` tries mesh shapes and
micro-batch counts, in order of preference (fewest micro-batches, then the
most plain data parallelism), and keeps the first that fits; nothing fitting
is an error that says so. `--json` ends the output with one JSON object.

Time before the first dollar: a lower bound on the step time, the larger of
  * XLA's own estimate for the TPU program (`optimal_seconds` in
    `compiled.cost_analysis()`),
  * a FLOPs roofline: the larger of the model FLOPs (the formula) and XLA's
    count, against v3's 123 TFLOP/s bf16 per chip (61.5 per core: JAX
    counts each of a chip's 2 TensorCores as a device),
  * an HBM roofline: XLA's bytes accessed against 900 GB/s per chip,
and which of them it is; the MFU ceiling that implies (model FLOPs /
(step seconds x peak)); days and chip-hours for `num_train_steps`, and the
cost at the given prices per chip-hour. XLA's cost analysis counts a loop
body once, so where the step loops (layers under `lax.scan`, micro-batches)
the cost comes from a second compile of the same step with the layers
unrolled and one micro-batch (`--cost_compile`, on by default): the same
work per step, the memory figures still from the program that runs.
`--recipe` plans both phases of a two-phase config (the paper's 90% of the
steps at seq 128, then 10% at 512) on one mesh and micro-batch count (the
trainer keeps one for the run; `--search` picks it on phase 2, the larger),
and the days and cost are the whole run's. None of this counts the time the
input pipeline, checkpoints, evaluation or collectives the estimate misses
add: it is a floor, not a forecast.

Needs libtpu (`pip install "jax[tpu]==<jax version>"`); it runs on the CPU,
no TPU is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import flags
from ml_collections import config_flags

from bert_jax import cli

HBM_BYTES_V3 = 16 * 1024**3
# TPU v3, per chip; a chip has two TensorCores and JAX counts each as a
# device, so a v3-32 is 32 devices on 16 chips.
CORES_PER_CHIP_V3 = 2
PEAK_FLOPS_PER_CHIP_V3 = 123e12  # bf16
HBM_BYTES_PER_SECOND_PER_CHIP_V3 = 900e9
_OOM = re.compile(r"RESOURCE_EXHAUSTED.*?required for [^(]*\(([\d.]+)G\)", re.S)

# v3-N names TensorCores; two cores per chip; libtpu names the chip grid.
TOPOLOGIES = {
    "v3-8": "v3:2x2", "v3-16": "v3:2x4", "v3-32": "v3:4x4",
    "v3-64": "v3:4x8", "v3-128": "v3:8x8", "v3-256": "v3:8x16",
    "v3-512": "v3:16x16", "v3-1024": "v3:16x32", "v3-2048": "v3:32x32",
}


def _prepare_environment() -> None:
  # libtpu compiles for a described topology without a TPU; these keep it
  # from probing for local chips, workers or a metadata server.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def topology_devices(topology: str):
  """The devices of a TPU v3 slice, e.g. 'v3-32' -> 32 TensorCores."""
  if topology not in TOPOLOGIES:
    raise ValueError(f"--topology={topology!r}: expected one of "
                     f"{', '.join(TOPOLOGIES)}")
  _prepare_environment()
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    desc = topologies.get_topology_desc(platform="tpu",
                                        topology_name=TOPOLOGIES[topology])
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        f"cannot describe TPU topology {topology} ({e}); is libtpu "
        "installed (pip install 'jax[tpu]==<jax version>')?") from e
  return desc.devices


def _compile(config, devices, ici_shape: Sequence[int], micro_batches: int,
             num_layers: int | None = None):
  """(compiled step, its StepFns, the config it used, compile seconds).

  `num_layers` builds the model with that many layers instead of the
  preset's (the cost programs).
  """
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.mesh.ici_shape = tuple(ici_shape)
    config.optimizer.grad_accum_steps = micro_batches
  mesh = sharding.create_mesh(ici_shape, devices=devices)
  dp = sharding.data_parallel_size(mesh)
  batch = config.train_batch_size
  if batch % (micro_batches * dp):
    raise ValueError(f"batch {batch} does not split into {micro_batches} "
                     f"micro-batches over {dp} data-parallel shards")
  task = tasks.from_config(config)
  if num_layers is not None:
    preset = task.model_config
    task.model_config = lambda vocab_size=None: dataclasses.replace(
        preset(vocab_size), num_layers=num_layers)
  fns = train.make_train_step(config, mesh, task=task)
  abstract_batch = fns.abstract_batch(config, config.max_seq_length,
                                      config.max_predictions_per_seq, batch)
  start = time.time()
  with sharding.activation_rules(mesh, train.rules_of(config)):
    compiled = fns.train_step.lower(fns.abstract_state,
                                    abstract_batch).compile()
  return compiled, fns, config, time.time() - start


def xla_cost(compiled) -> dict[str, float | None]:
  """Per-core FLOPs, bytes accessed and (TPU only) XLA's optimal seconds."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  optimal = cost.get("optimal_seconds")
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
          "optimal_seconds": None if optimal is None else float(optimal)}


def loops_in_step(config, micro_batches: int) -> bool:
  """Whether XLA's cost analysis of the step misses loop iterations."""
  return bool(config.model.scan_layers) or micro_batches > 1


def compile_step(config, devices, ici_shape: Sequence[int],
                 micro_batches: int) -> dict[str, Any]:
  """Compiles the train step for one mesh and micro-batch count."""
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  compiled, fns, config, seconds = _compile(config, devices, ici_shape,
                                            micro_batches)
  mem = compiled.memory_analysis()
  per_core = (mem.argument_size_in_bytes + mem.output_size_in_bytes
              + mem.temp_size_in_bytes - mem.alias_size_in_bytes
              + mem.generated_code_size_in_bytes)
  cost = xla_cost(compiled)
  return {
      "mesh": dict(zip(sharding.MESH_AXES, (int(s) for s in ici_shape))),
      "micro_batches": micro_batches,
      "per_core_bytes": int(per_core),
      # Model FLOPs (the MFU formula). XLA's own count visits a loop body
      # once, so with layers under lax.scan it misses (L - 1) of L layers;
      # it is reported beside, summed over the cores.
      "flops_per_step": train.model_flops_per_step(
          fns.model_config, config.train_batch_size, config.max_seq_length,
          config.max_predictions_per_seq, config.objective),
      "xla_cost_flops_per_step": cost["flops"] * len(devices),
      "xla_cost": cost,
      "num_layers": fns.model_config.num_layers,
      "compile_seconds": round(seconds, 1),
  }


def unrolled_cost(config, devices, ici_shape: Sequence[int], num_layers: int
                  ) -> tuple[dict[str, float | None], float]:
  """XLA's cost of a step as if every loop were unrolled; compile seconds.

  XLA counts a loop body once. Unrolled, a step's cost is linear in the
  number of layers (each layer's forward, backward and optimizer update
  come once per layer), so two small compiles, of 1 and 2 unrolled layers
  with the whole batch in one micro-batch (micro-batches add up to the
  batch), give it for any depth: cost(L) = cost(1) + (L - 1) x
  (cost(2) - cost(1)). Much faster than compiling L unrolled layers.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.scan_layers = False
  costs, seconds = [], 0.0
  for depth in (1, 2) if num_layers > 1 else (1,):
    compiled, _, _, s = _compile(config, devices, ici_shape, 1,
                                 num_layers=depth)
    costs.append(xla_cost(compiled))
    seconds += s
  if len(costs) == 1:
    return costs[0], seconds
  one, two = costs
  out = {}
  for key in one:
    if one[key] is None or two[key] is None:
      out[key] = None
    else:
      out[key] = one[key] + (num_layers - 1) * (two[key] - one[key])
  return out, seconds


def step_time(cost_per_core: dict[str, float | None],
              model_flops_per_step: float, num_cores: int,
              cores_per_chip: int = CORES_PER_CHIP_V3,
              peak_flops_per_chip: float = PEAK_FLOPS_PER_CHIP_V3,
              hbm_bytes_per_second_per_chip: float = (
                  HBM_BYTES_PER_SECOND_PER_CHIP_V3)) -> dict[str, Any]:
  """The step-time lower bound (the largest available) and its MFU ceiling.

  `cost_per_core` is `xla_cost`'s dict: per-core FLOPs, bytes accessed and
  XLA's optimal seconds (None where the backend gives none).
  """
  peak_core = peak_flops_per_chip / cores_per_chip
  bounds = {"flops_roofline": max(model_flops_per_step / num_cores,
                                  cost_per_core.get("flops") or 0.0)
                              / peak_core}
  if cost_per_core.get("bytes_accessed"):
    bounds["hbm_roofline"] = cost_per_core["bytes_accessed"] / (
        hbm_bytes_per_second_per_chip / cores_per_chip)
  if cost_per_core.get("optimal_seconds"):
    bounds["xla_optimal_seconds"] = cost_per_core["optimal_seconds"]
  bound = max(bounds, key=bounds.get)
  seconds = bounds[bound]
  return {"step_seconds": seconds, "step_bound": bound,
          "step_bounds": bounds,
          "mfu_ceiling": model_flops_per_step / (
              seconds * num_cores * peak_core)}


def training_time(phases: Sequence[tuple[int, float]], num_chips: int,
                  price_per_chip_hour: float | None = None,
                  spot_price_per_chip_hour: float | None = None
                  ) -> dict[str, Any]:
  """Days, chip-hours and cost of (steps, step seconds) phases in a row."""
  seconds = sum(steps * step_seconds for steps, step_seconds in phases)
  chip_hours = seconds / 3600 * num_chips
  out = {"train_steps": int(sum(steps for steps, _ in phases)),
         "train_days": seconds / 86400, "chip_hours": chip_hours}
  cost = {}
  if price_per_chip_hour is not None:
    cost["on_demand"] = chip_hours * price_per_chip_hour
  if spot_price_per_chip_hour is not None:
    cost["spot"] = chip_hours * spot_price_per_chip_hour
  if cost:
    out["train_cost"] = cost
  return out


def candidates(num_devices: int, num_heads: int, batch: int
               ) -> list[tuple[tuple[int, int, int], int]]:
  """(mesh, micro-batches) in order of preference.

  Fewest micro-batches first; for each count, plain data parallelism, then
  full FSDP (parameters and optimizer state split over every core), then
  FSDP with tensor parallelism over 2, 4 or 8 cores.
  """
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  meshes = [(num_devices, 1, 1), (1, num_devices, 1)]
  for tensor in (2, 4, 8):
    # The vocabulary is padded to a multiple of VOCAB_PAD_MULTIPLE rows,
    # so every tensor size offered here splits it evenly.
    if (num_devices % tensor == 0 and num_heads % tensor == 0
        and model_lib.VOCAB_PAD_MULTIPLE % tensor == 0):
      meshes.append((1, num_devices // tensor, tensor))
  out = []
  for micro in (1, 2, 4, 8, 16, 32):
    for m in dict.fromkeys(meshes):
      if batch % (micro * m[0] * m[1]) == 0:
        out.append((m, micro))
  return out


def _time_the_step(config, devices, best, cost_compile: bool,
                   log) -> dict[str, Any]:
  """The step-time fields of a plan for its chosen (fitting) candidate."""
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  cost, program = best["xla_cost"], "as compiled"
  if loops_in_step(config, best["micro_batches"]):
    # XLA counts a loop body once: its bounds miss the other iterations.
    program = "as compiled, loops counted once"
    if cost_compile:
      mesh = tuple(best["mesh"][a] for a in sharding.MESH_AXES)
      layers = best["num_layers"]
      try:
        cost, seconds = unrolled_cost(config, devices, mesh, layers)
        program = (f"unrolled, one micro-batch (1 and 2 layers, "
                   f"extrapolated to {layers})")
        log(f"  cost programs (1 and 2 layers unrolled, one micro-batch) "
            f"compiled in {seconds:.1f} s")
      except Exception as e:  # pylint: disable=broad-except
        if _OOM.search(str(e)) is None:
          raise
        log("  the unrolled cost program does not fit in HBM; XLA's "
            "bounds count each loop body once")
  out = step_time(cost, best["flops_per_step"], len(devices))
  out["cost_program"] = program
  out["xla_cost_per_core"] = cost
  return out


def plan(config, topology: str, search: bool, hbm_bytes: int = HBM_BYTES_V3,
         max_candidates: int = 12, log=print, cost_compile: bool = True,
         price_per_chip_hour: float | None = None,
         spot_price_per_chip_hour: float | None = None) -> dict[str, Any]:
  """Memory, step-time bound and training time for one shape of `config`.

  The training time is for all `num_train_steps` at this shape; `recipe`
  plans a two-phase run.
  """
  devices = topology_devices(topology)
  n = len(devices)
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  heads = model_lib.BertConfig.from_preset(config.model.preset).num_heads
  if search:
    tries = candidates(n, heads, config.train_batch_size)[:max_candidates]
  else:
    from bert_jax import sharding  # pylint: disable=g-import-not-at-top
    tries = [(sharding.resolve_shape(tuple(config.mesh.ici_shape), n),
              config.optimizer.grad_accum_steps)]
  results = []
  for mesh, micro in tries:
    try:
      r = compile_step(config, devices, mesh, micro)
      r["fits"] = r["per_core_bytes"] <= hbm_bytes
    except ValueError as e:
      log(f"mesh {mesh} x{micro} micro-batches: skipped ({e})")
      continue
    except Exception as e:  # pylint: disable=broad-except
      # XLA refuses to compile what cannot fit the TPU's HBM at all.
      m = _OOM.search(str(e))
      if m is None:
        raise
      r = {"mesh": dict(zip(("data", "fsdp", "tensor"), mesh)),
           "micro_batches": micro,
           "per_core_bytes": int(float(m.group(1)) * 2**30),
           "flops_per_step": float("nan"),
           "xla_cost_flops_per_step": float("nan"),
           "compile_seconds": float("nan"), "fits": False}
    results.append(r)
    log(f"mesh data={mesh[0]} fsdp={mesh[1]} tensor={mesh[2]}, "
        f"{micro} micro-batch(es): {r['per_core_bytes'] / 2**30:.2f} GiB "
        f"per core ({'fits' if r['fits'] else 'does not fit'} in "
        f"{hbm_bytes / 2**30:.0f} GiB), {r['flops_per_step']:.3e} "
        f"FLOPs/step, compiled in {r['compile_seconds']} s")
    if r["fits"]:
      break
  fitting = [r for r in results if r["fits"]]
  best = fitting[0] if fitting else (min(
      results, key=lambda r: r["per_core_bytes"]) if results else None)
  if best is None:
    raise ValueError(f"no mesh could be compiled for {topology}")
  out = {
      "topology": topology,
      "num_devices": n,
      "num_chips": n // CORES_PER_CHIP_V3,
      "mesh": best["mesh"],
      "micro_batches": best["micro_batches"],
      "per_core_bytes": best["per_core_bytes"],
      "hbm_bytes_per_core": hbm_bytes,
      "fits": best["fits"],
      "flops_per_step": best["flops_per_step"],
      "xla_cost_flops_per_step": best["xla_cost_flops_per_step"],
      "compile_seconds": best["compile_seconds"],
      "batch": config.train_batch_size,
      "max_seq_length": config.max_seq_length,
      "model": config.model.preset,
      "candidates_tried": len(results),
      "step_seconds": None, "step_bound": None, "mfu_ceiling": None,
      "train_days": None,
  }
  if best["fits"]:  # a step that cannot run has no step time
    out.update(_time_the_step(config, devices, best, cost_compile, log))
    out.update(training_time(
        [(config.num_train_steps, out["step_seconds"])], out["num_chips"],
        price_per_chip_hour, spot_price_per_chip_hour))
  return out


def phase_configs(config) -> list[tuple[int, Any]]:
  """(steps, config) of each phase: seq 128 then 512 in the paper's recipe."""
  if not config.phase2_start_step:
    return [(config.num_train_steps, config)]
  second = config.copy_and_resolve_references()
  with second.unlocked():
    second.max_seq_length = config.phase2_max_seq_length
    second.max_predictions_per_seq = config.phase2_max_predictions_per_seq
    second.train_batch_size = config.phase2_train_batch_size
  return [(config.phase2_start_step, config),
          (config.num_train_steps - config.phase2_start_step, second)]


def plan_recipe(config, topology: str, search: bool,
                hbm_bytes: int = HBM_BYTES_V3, max_candidates: int = 12,
                log=print, cost_compile: bool = True,
                price_per_chip_hour: float | None = None,
                spot_price_per_chip_hour: float | None = None
                ) -> dict[str, Any]:
  """The whole run: every phase on one mesh and micro-batch count.

  The trainer keeps one mesh and `grad_accum_steps` for the run, so the
  last phase (the longest sequences) chooses them and the others reuse
  them. Top-level `step_seconds` is the mean over the run's steps.
  """
  kw = dict(hbm_bytes=hbm_bytes, max_candidates=max_candidates, log=log,
            cost_compile=cost_compile)
  phases = phase_configs(config)
  last_steps, last_config = phases[-1]
  log(f"phase {len(phases)}: seq {last_config.max_seq_length}, "
      f"{last_steps} steps")
  last = plan(last_config, topology, search, **kw)
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  mesh = tuple(last["mesh"][a] for a in sharding.MESH_AXES)
  planned = []
  for k, (steps, c) in enumerate(phases[:-1]):
    c = c.copy_and_resolve_references()
    with c.unlocked():
      c.mesh.ici_shape = mesh
      c.optimizer.grad_accum_steps = last["micro_batches"]
    log(f"phase {k + 1}: seq {c.max_seq_length}, {steps} steps")
    planned.append((steps, plan(c, topology, False, **kw)))
  planned.append((last_steps, last))
  out = {k: last[k] for k in ("topology", "num_devices", "num_chips",
                              "mesh", "micro_batches", "hbm_bytes_per_core",
                              "model")}
  out["fits"] = all(p["fits"] for _, p in planned)
  out["per_core_bytes"] = max(p["per_core_bytes"] for _, p in planned)
  out["phases"] = [dict(p, steps=steps) for steps, p in planned]
  timed = all(p["step_seconds"] is not None for _, p in planned)
  out.update(step_seconds=None, step_bound=None, mfu_ceiling=None,
             train_days=None)
  if timed:
    out.update(training_time(
        [(steps, p["step_seconds"]) for steps, p in planned],
        out["num_chips"], price_per_chip_hour, spot_price_per_chip_hour))
    seconds = sum(steps * p["step_seconds"] for steps, p in planned)
    flops = sum(steps * p["flops_per_step"] for steps, p in planned)
    out["step_seconds"] = seconds / out["train_steps"]
    out["step_bound"] = [p["step_bound"] for _, p in planned]
    out["mfu_ceiling"] = flops / (
        seconds * out["num_chips"] * PEAK_FLOPS_PER_CHIP_V3)
  return out


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/pretrain.py:VARIANT", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v3-32",
                                f"One of {', '.join(TOPOLOGIES)}.")
_SEARCH = flags.DEFINE_boolean("search", False,
                               "Search mesh shapes and micro-batch counts.")
_RECIPE = flags.DEFINE_boolean(
    "recipe", False, "Plan every phase of the config (seq 128 then 512) "
    "and the whole run's days and cost.")
_JSON = flags.DEFINE_boolean("json", False,
                             "End the output with one JSON object.")
_HBM = flags.DEFINE_float("hbm_gib", 16.0, "HBM per core, GiB.")
_COST_COMPILE = flags.DEFINE_boolean(
    "cost_compile", True, "Where the step loops (scanned layers, "
    "micro-batches), compile it once more unrolled for XLA's cost.")
_PRICE = flags.DEFINE_float("price_per_chip_hour", None,
                            "On-demand price of one TPU v3 chip-hour.")
_SPOT_PRICE = flags.DEFINE_float("spot_price_per_chip_hour", None,
                                 "Spot (preemptible) price per chip-hour.")


def _describe(r: dict[str, Any]) -> str:
  gib = r["per_core_bytes"] / 2**30
  line = (f"{r['topology']}: seq {r['max_seq_length']}, mesh {r['mesh']}, "
          f"{r['micro_batches']} micro-batch(es), {gib:.2f} GiB per core "
          f"of {r['hbm_bytes_per_core'] / 2**30:.0f}, "
          f"{'fits' if r['fits'] else 'DOES NOT FIT'}, "
          f"{r['flops_per_step']:.3e} FLOPs/step, compiled in "
          f"{r['compile_seconds']} s")
  if r["step_seconds"] is not None:
    others = ", ".join(f"{k} {v * 1e3:.2f} ms"
                       for k, v in r["step_bounds"].items())
    line += (f"\n  step >= {r['step_seconds'] * 1e3:.2f} ms "
             f"({r['step_bound']}; {others}; XLA cost of the step "
             f"{r['cost_program']}), MFU ceiling "
             f"{r['mfu_ceiling']:.1%}")
  return line


def _describe_training(r: dict[str, Any]) -> str:
  if r["train_days"] is None:
    return "training time: not estimated (nothing compiled to time)"
  line = (f"{r['train_steps']:,} steps on {r['num_chips']} chips: >= "
          f"{r['train_days']:.3g} days, {r['chip_hours']:,.4g} chip-hours")
  for kind, cost in r.get("train_cost", {}).items():
    line += f", cost {cost:,.2f} {kind.replace('_', '-')}"
  return line


def main(argv: Sequence[str]) -> None:
  del argv
  kw = dict(hbm_bytes=int(_HBM.value * 1024**3),
            cost_compile=_COST_COMPILE.value,
            price_per_chip_hour=_PRICE.value,
            spot_price_per_chip_hour=_SPOT_PRICE.value)
  if _RECIPE.value:
    result = plan_recipe(_CONFIG.value, _TOPOLOGY.value, _SEARCH.value, **kw)
    for p in result["phases"]:
      print(f"{p['steps']:,} steps: " + _describe(p))
  else:
    result = plan(_CONFIG.value, _TOPOLOGY.value, _SEARCH.value, **kw)
    print(_describe(result))
  print(_describe_training(result))
  if _JSON.value:
    print(json.dumps(result))
  if not result["fits"]:
    gib = result["per_core_bytes"] / 2**30
    sys.exit(f"error: nothing tried fits in {result['hbm_bytes_per_core'] / 2**30:.0f} "
             f"GiB per core on {result['topology']} (smallest: {gib:.2f} "
             "GiB); use --search, more micro-batches, remat "
             "(--config.model.remat_policy=full) or a larger slice")


if __name__ == "__main__":
  _prepare_environment()
  cli.run(main)
