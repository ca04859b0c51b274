"""Runs every job of a paper table: `python -m experiments.run TABLE`.

    python -m experiments.run table6 --scale=small --root=workdir/experiments
    python -m experiments.run table5 --scale=paper --launcher=tpu --dry-run \\
        --root=gs://B/experiments --tpu_zone=europe-west4-a --tpu_bucket=gs://B

TABLE is one of table1 ... table8, figure5 (experiments/definitions.py).
Each job (data set, pre-training run, fine-tuning grid) runs in its own
workdir under --root and resumes there; finished jobs are skipped, so a
killed runner run again continues where it stopped. A pre-trained model is
one job for every row and table that fine-tunes it (same --root). Progress
(jobs done, running, ETA) goes to stdout, each job's output to its
workdir's log.txt. `--dry-run` prints every job's full command line.

--launcher=local runs the jobs here, one at a time; --launcher=tpu starts
each pre-training run on its own Cloud TPU slice (`python -m launch.tpu
resume`, then waits for its results.json) and runs the fine-tuning grids on
one v3-8 host over `gcloud ... ssh`; --root and --data_root must then be
gs:// URLs (default data root: the bucket's data/), which the hosts and
this runner read and write directly; each job's lock and log stay on this
machine, under ~/.cache/bert_jax/experiments/.
"""

import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from bert_jax import storage
from experiments import definitions
from experiments import jobs as jobs_lib

_SCALE = flags.DEFINE_enum("scale", "small", definitions.SCALES,
                           "paper: the published recipe; small: this CPU.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", jobs_lib.LAUNCHERS,
                              "Where the jobs run.")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False,
                                "Print every job's command; run nothing.")
_ROOT = flags.DEFINE_string("root", "workdir/experiments",
                            "One workdir per job below it.")
_DATA_ROOT = flags.DEFINE_string(
    "data_root", "", "Paper scale: GLUE, SQuAD, ..., the corpus; small: the "
    "stand-in sets. Default: ROOT/data; with --launcher=tpu, "
    "TPU_BUCKET/data.")
_ONLY = flags.DEFINE_list("only", [], "Only jobs of these kinds (data, "
                          "pretrain, finetune) and what they need.")
_POLL = flags.DEFINE_float("poll_seconds", 60.0, "TPU: between checks for a "
                           "run's results.json.")
_TPU_PREFIX = flags.DEFINE_string("tpu_prefix", "bert-exp",
                                  "TPU: pre-training slices' name prefix.")
_TPU_ZONE = flags.DEFINE_string("tpu_zone", "europe-west4-a", "TPU: zone.")
_TPU_BUCKET = flags.DEFINE_string("tpu_bucket", "gs://BUCKET",
                                  "TPU: the bucket (logs, default data).")
_TPU_PROJECT = flags.DEFINE_string("tpu_project", "", "TPU: gcloud project.")
_TPU_FINETUNE = flags.DEFINE_string("tpu_finetune_name", "bert-exp-ft",
                                    "TPU: the v3-8 host for fine-tuning.")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("give one TABLE: "
                         + ", ".join(definitions.TABLES))
  try:
    table = definitions.get(argv[1], _SCALE.value)
    tpu = jobs_lib.Tpu(_TPU_PREFIX.value, _TPU_ZONE.value, _TPU_BUCKET.value,
                       _TPU_FINETUNE.value, _TPU_PROJECT.value)
    jobs = jobs_lib.build(table, _ROOT.value, _LAUNCHER.value,
                          _DATA_ROOT.value, tpu)
    if _ONLY.value:
      jobs = jobs_lib.select(jobs, _ONLY.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if _DRY_RUN.value:
    print(f"# {argv[1]} ({table.key}) at {table.scale} scale: {len(jobs)} "
          f"jobs, launcher {_LAUNCHER.value}")
    for note in jobs_lib.setup_notes(table, _LAUNCHER.value, tpu):
      print(f"# {note}")
    for job in jobs:
      # A dry run reads nothing remote (it must work offline).
      state = ("not checked" if storage.is_remote(job.done_file)
               else "done" if job.done() else "todo")
      print(f"# {job.name} [{job.kind}, {state}"
            + (f", after {', '.join(job.deps)}" if job.deps else "") + "]")
      print(job.command())
    return
  runner = jobs_lib.Runner(jobs, table.scale, _LAUNCHER.value, _POLL.value)
  sys.exit(runner.run())


if __name__ == "__main__":
  sys.argv = [a.replace("--dry-run", "--dry_run") if a == "--dry-run" else a
              for a in sys.argv]
  app.run(main)
