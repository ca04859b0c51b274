"""The job: pre-training or fine-tuning, as the config says.

    python -m bert_jax.main --config=configs/pretrain.py:demo --workdir=DIR \
        [--config.train_batch_size=64 ...]
    python -m bert_jax.main --config=configs/finetune.py:mrpc --workdir=DIR \
        --config.init_checkpoint=CKPT --config.data_dir=glue_data/MRPC

Multi-host: pass --coordinator_address/--num_processes/--process_id, or
--jax_distributed on TPU VMs (which find their peers by themselves).
"""

import os
import sys
import traceback
from collections.abc import Sequence

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bert_jax import checkpoints
from bert_jax import cli
from bert_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:demo.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, results.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index (multi-host).")
_DISTRIBUTED = flags.DEFINE_boolean(
    "jax_distributed", False,
    "Call jax.distributed.initialize() with no arguments (TPU VMs, SLURM).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100,
    "Multi-host: a process silent this long is taken as dead and the others "
    "stop (JAX's default, 100).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize(heartbeat_timeout_seconds=_HEARTBEAT.value)
  logging.info("process %d of %d, %d devices", jax.process_index(),
               jax.process_count(), jax.device_count())
  try:
    results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train.ConfigError, checkpoints.CheckpointIOError) as e:
    sys.exit(f"error: {e}")
  except train.NonFiniteLossError as e:
    logging.error("%s", e)
    sys.exit(f"stopped: {e}")
  except Exception as e:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    # Typically a collective failed because another process is gone
    # (killed, preempted). Exit now: a normal exit would wait in
    # jax.distributed's shutdown barrier for the lost process until the
    # heartbeat timeout, and then abort.
    traceback.print_exc()
    first = (str(e).strip().splitlines() or [""])[0]
    print(f"error: process {jax.process_index()} of {jax.process_count()} "
          f"stopped: {type(e).__name__}: {first} (a failed collective means "
          "another process died: see its log)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  if jax.process_index() == 0:
    print("results: " + "  ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in results.items() if not isinstance(v, (dict, list))
        and k not in ("init_checkpoint", "init", "export_skipped")))
    for split, path in results.get("predictions", {}).items():
      print(f"predictions {split}: {path}")
    for fmt, path in results.get("checkpoints", {}).items():
      print(f"exported {fmt}: {path}")


if __name__ == "__main__":
  cli.run(main)
