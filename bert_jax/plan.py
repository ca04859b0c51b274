"""Plans a TPU v3 pod run on a machine without a TPU.

    python -m bert_jax.plan --config=configs/pretrain.py:large --topology=v3-32 \
        [--search] [--json] [--config.KEY=VALUE ...]

Compiles the real sharded train step (`train.make_train_step`, the one the
job runs) ahead of time for the TPU topology with libtpu on this CPU
machine, and reports per-core memory against a v3 core's 16 GiB of HBM,
FLOPs per step and compile time. `--search` tries mesh shapes and
micro-batch counts, in order of preference (fewest micro-batches, then the
most plain data parallelism), and keeps the first that fits; nothing fitting
is an error that says so. `--json` ends the output with one JSON object.

Needs libtpu (`pip install "jax[tpu]==<jax version>"`); it runs on the CPU,
no TPU is touched.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags
from ml_collections import config_flags

HBM_BYTES_V3 = 16 * 1024**3
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


def compile_step(config, devices, ici_shape: Sequence[int],
                 micro_batches: int) -> dict[str, Any]:
  """Compiles the train step for one mesh and micro-batch count."""
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
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
  fns = train.make_train_step(config, mesh)
  abstract_batch = fns.abstract_batch(config, config.max_seq_length,
                                      config.max_predictions_per_seq, batch)
  start = time.time()
  with sharding.activation_rules(mesh, train.rules_of(config)):
    compiled = fns.train_step.lower(fns.abstract_state,
                                    abstract_batch).compile()
  seconds = time.time() - start
  mem = compiled.memory_analysis()
  per_core = (mem.argument_size_in_bytes + mem.output_size_in_bytes
              + mem.temp_size_in_bytes - mem.alias_size_in_bytes
              + mem.generated_code_size_in_bytes)
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  per_device_flops = float(cost.get("flops", 0.0))
  return {
      "mesh": dict(zip(sharding.MESH_AXES, (int(s) for s in ici_shape))),
      "micro_batches": micro_batches,
      "per_core_bytes": int(per_core),
      # Model FLOPs (the MFU formula). XLA's own count visits a loop body
      # once, so with layers under lax.scan it misses (L - 1) of L layers;
      # it is reported beside, summed over the cores.
      "flops_per_step": train.model_flops_per_step(
          fns.model_config, batch, config.max_seq_length,
          config.max_predictions_per_seq, config.objective),
      "xla_cost_flops_per_step": per_device_flops * len(devices),
      "compile_seconds": round(seconds, 1),
  }


def candidates(num_devices: int, num_heads: int, batch: int
               ) -> list[tuple[tuple[int, int, int], int]]:
  """(mesh, micro-batches) in order of preference.

  Fewest micro-batches first; for each count, plain data parallelism, then
  full FSDP (parameters and optimizer state split over every core), then
  FSDP with tensor parallelism over 2, 4 or 8 cores.
  """
  meshes = [(num_devices, 1, 1), (1, num_devices, 1)]
  for tensor in (2, 4, 8):
    if num_devices % tensor == 0 and num_heads % tensor == 0:
      meshes.append((1, num_devices // tensor, tensor))
  out = []
  for micro in (1, 2, 4, 8, 16, 32):
    for m in dict.fromkeys(meshes):
      if batch % (micro * m[0] * m[1]) == 0:
        out.append((m, micro))
  return out


def plan(config, topology: str, search: bool, hbm_bytes: int = HBM_BYTES_V3,
         max_candidates: int = 12, log=print) -> dict[str, Any]:
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
  return {
      "topology": topology,
      "num_devices": n,
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
  }


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/pretrain.py:VARIANT", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v3-32",
                                f"One of {', '.join(TOPOLOGIES)}.")
_SEARCH = flags.DEFINE_boolean("search", False,
                               "Search mesh shapes and micro-batch counts.")
_JSON = flags.DEFINE_boolean("json", False,
                             "End the output with one JSON object.")
_HBM = flags.DEFINE_float("hbm_gib", 16.0, "HBM per core, GiB.")


def main(argv: Sequence[str]) -> None:
  del argv
  result = plan(_CONFIG.value, _TOPOLOGY.value, _SEARCH.value,
                int(_HBM.value * 1024**3))
  gib = result["per_core_bytes"] / 2**30
  print(f"{result['topology']}: mesh {result['mesh']}, "
        f"{result['micro_batches']} micro-batch(es), {gib:.2f} GiB per core "
        f"of {result['hbm_bytes_per_core'] / 2**30:.0f}, "
        f"{'fits' if result['fits'] else 'DOES NOT FIT'}, "
        f"{result['flops_per_step']:.3e} FLOPs/step, compiled in "
        f"{result['compile_seconds']} s")
  if _JSON.value:
    print(json.dumps(result))
  if not result["fits"]:
    sys.exit(f"error: nothing tried fits in {result['hbm_bytes_per_core'] / 2**30:.0f} "
             f"GiB per core on {result['topology']} (smallest: {gib:.2f} "
             "GiB); use --search, more micro-batches, remat "
             "(--config.model.remat_policy=full) or a larger slice")


if __name__ == "__main__":
  _prepare_environment()
  app.run(main)
