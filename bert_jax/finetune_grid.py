"""The paper's fine-tuning grid: every (lr, batch, epochs) x seeds, best on dev.

    python -m bert_jax.finetune_grid --config=configs/finetune.py:mrpc \\
        --workdir=DIR --config.init_checkpoint=CKPT \\
        --config.data_dir=glue_data/MRPC \\
        [--learning_rates=5e-5,4e-5,3e-5,2e-5] [--batch_sizes=16,32] \\
        [--epochs=2,3,4] [--seeds=1,2,3] [--metric=eval_accuracy]

Each point runs in its own workdir (`DIR/lr=3e-05,bs=32,ep=3,seed=1`) and
resumes there, so a killed grid continues where it stopped and finished
points are never run again. The best point is the one with the highest mean
dev metric over seeds (the paper picks on dev and restarts BERT-Large
several times); `DIR/grid.json` holds every point's mean +- std, and under
`runs` each seed's workdir and dev metrics (every `eval_*` number of its
results.json), so other metrics of the chosen point need no second pass.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax import storage

# Each task's headline dev metric (the one the paper reports).
HEADLINE = {"cola": "eval_matthews_corrcoef", "stsb": "eval_spearman",
            "mrpc": "eval_f1", "qqp": "eval_f1",
            "squad11": "eval_f1", "squad20": "eval_f1"}


def headline_metric(task: str) -> str:
  return HEADLINE.get(task, "eval_accuracy")


def point_name(lr: float, batch: int, epochs: float, seed: int) -> str:
  return f"lr={lr:g},bs={batch},ep={epochs:g},seed={seed}"


def summarize(runs: dict[tuple, list[float]]) -> list[dict[str, Any]]:
  """Mean and sample std over seeds per (lr, batch, epochs), best first."""
  rows = []
  for (lr, batch, epochs), values in runs.items():
    v = np.asarray(values, np.float64)
    rows.append({"learning_rate": lr, "train_batch_size": batch,
                 "num_train_epochs": epochs, "seeds": len(v),
                 "mean": float(v.mean()),
                 "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                 "values": [float(x) for x in v]})
  rows.sort(key=lambda r: -r["mean"])
  return rows


def run_grid(config, workdir: str, learning_rates: Sequence[float],
             batch_sizes: Sequence[int], epochs: Sequence[float],
             seeds: Sequence[int], metric: str | None = None
             ) -> dict[str, Any]:
  """Runs (or skips, when finished) every point; returns grid.json."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  metric = metric or headline_metric(config.task)
  runs: dict[tuple, list[float]] = {}
  details: dict[tuple, list[dict[str, Any]]] = {}
  points = [(lr, b, e, s) for lr in learning_rates for b in batch_sizes
            for e in epochs for s in seeds]
  for i, (lr, batch, ep, seed) in enumerate(points):
    point_dir = os.path.join(workdir, point_name(lr, batch, ep, seed))
    results_file = os.path.join(point_dir, "results.json")
    if storage.exists(results_file):
      results = json.loads(storage.read_text(results_file))
      state = "done before"
    else:
      c = config.copy_and_resolve_references()
      c.unlock()
      c.learning_rate, c.train_batch_size = lr, batch
      c.num_train_epochs, c.seed = ep, seed
      c.lock()
      results = train.train_and_evaluate(c, point_dir)
      if "preempted_at_step" in results:
        raise SystemExit("grid: preempted; run it again to continue")
      state = "ran"
    if metric not in results:
      raise KeyError(f"{results_file} has no {metric!r}; it has "
                     f"{sorted(k for k in results if k.startswith('eval'))}")
    runs.setdefault((lr, batch, ep), []).append(results[metric])
    details.setdefault((lr, batch, ep), []).append({
        "seed": seed, "workdir": point_name(lr, batch, ep, seed),
        "results": {k: v for k, v in results.items()
                    if k.startswith("eval_") and isinstance(v, (int, float))}})
    print(f"grid point {i + 1}/{len(points)} ({state}): "
          f"{point_name(lr, batch, ep, seed)}  {metric} "
          f"{results[metric]:.4f}", flush=True)
  rows = summarize(runs)
  for row in rows:
    row["runs"] = details[(row["learning_rate"], row["train_batch_size"],
                           row["num_train_epochs"])]
  grid = {"task": config.task, "metric": metric, "best": rows[0],
          "points": rows}
  storage.write_text(os.path.join(workdir, "grid.json"),
                     json.dumps(grid, indent=2))
  return grid


def _floats(spec: str) -> list[float]:
  return [float(x) for x in spec.split(",") if x]


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f"finetune_grid: unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  try:
    grid = run_grid(f.config, f.workdir, _floats(f.learning_rates),
                    [int(x) for x in _floats(f.batch_sizes)],
                    _floats(f.epochs), [int(x) for x in _floats(f.seeds)],
                    f.metric or None)
  except (train.ConfigError, KeyError) as e:
    sys.exit(f"error: {str(e).strip(chr(34))}")
  best = grid["best"]
  print(f"best on dev: lr {best['learning_rate']:g}, batch "
        f"{best['train_batch_size']}, {best['num_train_epochs']:g} epochs: "
        f"{grid['metric']} {best['mean']:.4f} +- {best['std']:.4f} over "
        f"{best['seeds']} seeds")


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      "config", None, "configs/finetune.py:TASK", lock_config=True)
  flags.DEFINE_string("workdir", None, "One sub-directory per grid point.")
  flags.DEFINE_string("learning_rates", "5e-5,4e-5,3e-5,2e-5", "")
  flags.DEFINE_string("batch_sizes", "32", "The paper also tries 16.")
  flags.DEFINE_string("epochs", "3", "The paper also tries 2 and 4.")
  flags.DEFINE_string("seeds", "1", "Several: report mean +- std.")
  flags.DEFINE_string("metric", "", "Dev metric to pick by (default: the "
                      "task's headline metric).")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  from bert_jax import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  cli.run(main)
