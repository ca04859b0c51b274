"""A table's jobs: data, pre-training and fine-tuning, each in its own workdir.

    ROOT/data/<set>/                      a small-scale stand-in set
    ROOT/data/pretraining/<key>_<seq>/    pre-training shards (shared by runs
                                          of one objective and masking)
    ROOT/pretrain/<pretrain>/             bert_jax.main (results.json)
    ROOT/finetune/<pretrain>/<task>/      bert_jax.finetune_grid (grid.json)

A job is finished when its result file is there and complete; a pre-trained
model is one job however many rows and tables fine-tune it. Each job runs
as a subprocess that resumes from its own workdir, so a killed runner run
again continues where it stopped and recomputes nothing that had finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from bert_jax import storage
from experiments import definitions as defs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ("local", "tpu")
KINDS = ("data", "pretrain", "finetune")
LOCK = ".running"  # pid of the process running a job, in its workdir
LOG = "log.txt"
# Minutes a job takes before any has been measured (small: this 2-core CPU,
# paper: a v3-32 / v3-128 slice and one v3-8).
NOMINAL_MINUTES = {"small": {"data": 1, "pretrain": 8, "finetune": 6},
                   "paper": {"data": 0, "pretrain": 4 * 24 * 60,
                             "finetune": 120}}
_LARGE_SIZES = ("large", "L12_H1024_A16", "L24_H1024_A16")


@dataclasses.dataclass(frozen=True)
class Tpu:
  """Where `--launcher=tpu` runs: a slice per pre-training run (named
  PREFIX-<hash>, from a launch.tpu recipe) and one v3-8 host for fine-tuning
  (FINETUNE_NAME, created and set up once with launch.tpu)."""
  prefix: str = "bert-exp"
  zone: str = "europe-west4-a"
  bucket: str = "gs://BUCKET"
  finetune_name: str = "bert-exp-ft"
  project: str = ""


@dataclasses.dataclass
class Job:
  name: str  # unique in a graph
  kind: str  # one of KINDS
  argv: list[str]  # the command, argv[0] 'python'
  workdir: str
  done_file: str
  deps: tuple[str, ...] = ()
  # finetune: the grid, to tell a finished grid.json from an older, smaller
  # one.
  grid: defs.Grid | None = None

  def done(self) -> bool:
    if not storage.exists(self.done_file):
      return False
    if self.kind == "data":
      return True
    try:
      result = json.loads(storage.read_text(self.done_file))
    except (OSError, json.JSONDecodeError):
      return False
    if self.kind == "pretrain":
      return "steps" in result
    return grid_complete(result, self.grid)

  def command(self) -> str:
    return shlex.join(self.argv)


def grid_complete(grid_json: dict, grid: defs.Grid | None) -> bool:
  """Whether a grid.json covers every point and seed of `grid`."""
  if grid is None:
    return "best" in grid_json
  seen = {(p["learning_rate"], p["train_batch_size"], p["num_train_epochs"]):
          {r["seed"] for r in p.get("runs", ())}
          for p in grid_json.get("points", ())}
  return all(set(grid.seeds) <= seen.get((lr, b, float(e)), set())
             for lr in grid.learning_rates for b in grid.batch_sizes
             for e in grid.epochs)


# -- paths -------------------------------------------------------------------

def pretrain_dir(root: str, p: defs.Pretrain) -> str:
  return os.path.join(root, "pretrain", p.slug)


def finetune_dir(root: str, p: defs.Pretrain, f: defs.Finetune) -> str:
  return os.path.join(root, "finetune", p.slug, f.slug)


def init_checkpoint(root: str, p: defs.Pretrain, f: defs.Finetune) -> str:
  d = pretrain_dir(root, p)
  if f.init_step is None:
    return d
  return os.path.join(d, "checkpoints", str(f.init_step))


def data_dir(root: str, data_root: str, scale: str, f: defs.Finetune) -> str:
  if scale == "paper":
    return os.path.join(data_root, defs.DATA[f.data])
  return os.path.join(data_root or os.path.join(root, "data"), f.data)


def _pretraining_data(root: str, data_root: str, scale: str,
                      p: defs.Pretrain) -> tuple[list[str], dict[str, str]]:
  """Overrides naming the shards (shared by runs of one objective and
  masking), and for the TPU launcher its data flags."""
  c = pretrain_config(p)
  ratios = "_".join(f"{round(100 * x)}" for x in c.data.mask_ratios)
  key = f"{c.objective}_{ratios}"
  base = (os.path.join(root, "data", "pretraining") if scale == "small"
          else os.path.join(data_root, "pretraining"))
  dirs = {"data.data_dir": os.path.join(base, f"{key}_{c.max_seq_length}")}
  if c.phase2_start_step:
    dirs["data.phase2_data_dir"] = os.path.join(
        base, f"{key}_{c.phase2_max_seq_length}")
  extra = []
  if scale == "paper":
    # The paper's corpus (BooksCorpus + Wikipedia, one sentence a line,
    # blank lines between documents) is the user's to put there.
    extra.append(f"--config.data.input_file="
                 f"{os.path.join(data_root, 'corpus', '*')}")
  return extra, dirs


def pretrain_config(p: defs.Pretrain):
  """The run's config: `configs/pretrain.py:ARG` with its overrides (an
  unknown key raises KeyError, a wrong type TypeError)."""
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  c = pretrain.get_config(p.arg)
  c.update_from_flattened_dict(dict(p.overrides))
  return c


def _overrides(pairs) -> list[str]:
  return [f"--config.{k}={_flag_value(v)}" for k, v in pairs]


def _flag_value(v) -> str:
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, (tuple, list)):
    return ",".join(str(x) for x in v)
  return str(v)


def tpu_name(prefix: str, p: defs.Pretrain) -> str:
  return f"{prefix}-{hashlib.sha1(p.slug.encode()).hexdigest()[:8]}"


def tpu_recipe(p: defs.Pretrain) -> str:
  size = pretrain_config(p).model.preset
  return "large-v3-128" if size in _LARGE_SIZES else "base-v3-32"


# -- the graph ---------------------------------------------------------------

def build(table: defs.Table, root: str, launcher: str = "local",
          data_root: str = "", tpu: Tpu | None = None) -> list[Job]:
  """Every job of the table, dependencies first, each once."""
  if launcher not in LAUNCHERS:
    raise ValueError(f"unknown launcher {launcher!r}; known: "
                     f"{', '.join(LAUNCHERS)}")
  tpu = tpu or Tpu()
  root = storage.abspath(root)
  if launcher == "tpu":
    data_root = data_root or f"{tpu.bucket.rstrip('/')}/data"
    local = [f"{name}={path}" for name, path in
             (("--root", root), ("--data_root", data_root))
             if not storage.is_remote(path)]
    if local:
      raise ValueError(f"--launcher=tpu: {', '.join(local)} is not a gs:// "
                       "URL; the slices' hosts read and write there")
  data_root = data_root or os.path.join(root, "data")
  jobs: dict[str, Job] = {}

  def add(job: Job) -> str:
    known = jobs.setdefault(job.name, job)
    if known.argv != job.argv:
      raise ValueError(f"two different jobs are named {job.name!r}:\n  "
                       f"{shlex.join(known.argv)}\n  {shlex.join(job.argv)}")
    return job.name

  for row in table.rows:
    if row.pretrain is None:
      continue
    p = row.pretrain
    work = pretrain_dir(root, p)
    extra, dirs = _pretraining_data(root, data_root, table.scale, p)
    config = f"configs/pretrain.py:{p.arg}"
    overrides = _overrides(p.overrides)
    if launcher == "local":
      argv = ["python", "-m", "bert_jax.main", f"--config={config}",
              f"--workdir={work}", *extra, *_overrides(dirs.items()),
              *overrides]
    else:
      phase2 = dirs.get("data.phase2_data_dir", "")
      argv = ["python", "-m", "launch.tpu", "resume",
              f"--name={tpu_name(tpu.prefix, p)}", f"--zone={tpu.zone}",
              f"--recipe={tpu_recipe(p)}", f"--bucket={tpu.bucket}",
              *([f"--project={tpu.project}"] if tpu.project else []),
              f"--config={config}", f"--workdir={work}",
              f"--data-dir={dirs['data.data_dir']}",
              *([f"--phase2-data-dir={phase2}"] if phase2 else []),
              "--", *extra, *overrides]
    pre = add(Job(f"pretrain/{p.slug}", "pretrain", argv, work,
                  os.path.join(work, "results.json")))
    for f in row.finetunes.values():
      deps = [pre]
      if table.scale == "small":
        set_dir = data_dir(root, data_root, "small", f)
        deps.append(add(Job(
            f"data/{f.data}", "data",
            ["python", "-m", "experiments.prepare_data", f"--set={f.data}",
             f"--out_dir={os.path.dirname(set_dir)}"], set_dir,
            os.path.join(set_dir, "meta.json"))))
      work_f = finetune_dir(root, p, f)
      g = f.grid
      grid_argv = [
          "python", "-m", "bert_jax.finetune_grid",
          f"--config=configs/finetune.py:{f.task}", f"--workdir={work_f}",
          f"--config.init_checkpoint={init_checkpoint(root, p, f)}",
          f"--config.data_dir={data_dir(root, data_root, table.scale, f)}",
          *_overrides(f.overrides),
          f"--learning_rates={_flag_value(g.learning_rates)}",
          f"--batch_sizes={_flag_value(g.batch_sizes)}",
          f"--epochs={_flag_value(g.epochs)}",
          f"--seeds={_flag_value(g.seeds)}", f"--metric={f.metric}"]
      if launcher == "tpu":
        from launch.tpu import commands  # pylint: disable=g-import-not-at-top
        target = commands.Target(tpu.finetune_name, tpu.zone, "v3-8",
                                 project=tpu.project)
        script = (f'cd "{commands.REPO_DIR}" && '
                  + shlex.join([".venv/bin/python", *grid_argv[1:]]))
        grid_argv = commands.ssh(target, script, worker="all")
      add(Job(f"finetune/{p.slug}/{f.slug}", "finetune", grid_argv, work_f,
              os.path.join(work_f, "grid.json"), tuple(deps), g))
  order = {k: i for i, k in enumerate(KINDS)}
  return sorted(jobs.values(), key=lambda j: order[j.kind])


def setup_notes(table: defs.Table, launcher: str, tpu: Tpu | None) -> list[str]:
  """What must exist before the jobs run (printed as comments)."""
  if launcher != "tpu":
    return []
  tpu = tpu or Tpu()
  common = (f"--name={tpu.finetune_name} --zone={tpu.zone} "
            f"--recipe=base-v3-8 --bucket={tpu.bucket}")
  return [
      "pre-training: each run on its own slice, created, set up and "
      "started (or resumed) by launch.tpu resume; the hosts and this "
      "runner read and write ROOT and the data root as gs:// URLs",
      "fine-tuning: one v3-8 host, once: python -m launch.tpu create "
      f"{common} && python -m launch.tpu setup {common}",
      f"data: GLUE (download script layout), SQuAD, SWAG, CoNLL-2003 and "
      f"the pre-training corpus under the data root ({table.scale} scale)"]


# -- running -----------------------------------------------------------------

def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def state_dir(job: Job) -> str:
  """Where the runner keeps a job's lock and log: its workdir, or for a
  gs:// one a local directory standing for it (under storage.cache_root)."""
  if not storage.is_remote(job.workdir):
    return job.workdir
  return os.path.join(storage.cache_root(), "experiments",
                      job.workdir[len("gs://"):])


def running_pid(job: Job) -> int | None:
  """The pid of a live process running `job` (another runner's), if any."""
  try:
    with open(os.path.join(state_dir(job), LOCK)) as f:
      pid = int(f.read().strip() or 0)
  except (OSError, ValueError):
    return None
  return pid if pid and pid != os.getpid() and _alive(pid) else None


def _fmt_minutes(m: float) -> str:
  if m >= 60 * 24:
    return f"{m / 60 / 24:.1f} d"
  if m >= 60:
    return f"{m / 60:.1f} h"
  return f"{m:.0f} min"


class Runner:
  """Runs the jobs in order, one at a time; finished ones are skipped."""

  def __init__(self, jobs: Sequence[Job], scale: str, launcher: str = "local",
               poll_seconds: float = 60.0, out=None,
               env: dict[str, str] | None = None):
    self.jobs = list(jobs)
    self.scale = scale
    self.launcher = launcher
    self.poll_seconds = poll_seconds
    self.out = out or sys.stdout
    self.env = env
    self.minutes: dict[str, list[float]] = {k: [] for k in KINDS}
    self.failed: list[str] = []
    self._child: subprocess.Popen | None = None
    self._stopping = 0

  def say(self, text: str) -> None:
    print(text, file=self.out, flush=True)

  def eta_minutes(self, remaining: Sequence[Job]) -> float:
    def per(kind):
      done = self.minutes[kind]
      return (sum(done) / len(done) if done
              else NOMINAL_MINUTES[self.scale][kind])
    return sum(per(j.kind) for j in remaining)

  def progress(self) -> str:
    done = [j for j in self.jobs if j.done()]
    running = [j for j in self.jobs if not j.done() and running_pid(j)]
    left = [j for j in self.jobs if not j.done()]
    n_running = len(running) + (1 if self._child else 0)
    return (f"{len(done)}/{len(self.jobs)} jobs done, {n_running} running, "
            f"ETA {_fmt_minutes(self.eta_minutes(left))}")

  def _argv(self, job: Job) -> list[str]:
    if job.argv[0] == "python":
      return [sys.executable, *job.argv[1:]]
    return list(job.argv)

  def _forward_term(self, signum, frame):  # pylint: disable=unused-argument
    # The trainer checkpoints on SIGTERM: pass it on; run_one's wait()
    # returns when it has exited (waiting here, inside that wait(),
    # would deadlock on Popen's lock), then the runner stops.
    self._stopping = signum
    if self._child and self._child.poll() is None:
      self._child.send_signal(signal.SIGTERM)
    else:
      raise SystemExit(f"runner: stopped by signal {signum}; run it again "
                       "to continue")

  def run_one(self, job: Job) -> bool:
    os.makedirs(state_dir(job), exist_ok=True)
    other = running_pid(job)
    if other:
      self.say(f"  {job.name}: running in process {other}; waiting for it")
      while running_pid(job):
        time.sleep(self.poll_seconds)
      return job.done()
    lock = os.path.join(state_dir(job), LOCK)
    with open(lock, "w") as f:
      f.write(str(os.getpid()))
    log = os.path.join(state_dir(job), LOG)
    t0 = time.time()
    try:
      with open(log, "a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                f"{job.command()}\n")
        f.flush()
        self._child = subprocess.Popen(self._argv(job), cwd=REPO, stdout=f,
                                       stderr=subprocess.STDOUT, env=self.env)
        rc = self._child.wait()
      self._child = None
      if self._stopping:
        raise SystemExit(f"runner: stopped by signal {self._stopping}; "
                         "the job saved its state; run it again to continue")
      if rc == 0 and self.launcher == "tpu" and job.kind == "pretrain":
        # Started detached on the slice: wait for its results.json.
        while not job.done():
          time.sleep(self.poll_seconds)
    finally:
      self._child = None
      if os.path.exists(lock):
        os.remove(lock)
    ok = rc == 0 and job.done()
    if ok:
      self.minutes[job.kind].append((time.time() - t0) / 60)
    else:
      self.say(f"  {job.name}: FAILED (exit status {rc}); see {log}")
    return ok

  def run(self) -> int:
    previous = signal.signal(signal.SIGTERM, self._forward_term)
    try:
      return self._run()
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _run(self) -> int:
    blocked: set[str] = set()
    for job in self.jobs:
      if job.done():
        self.say(f"[{self.progress()}] done before: {job.name}")
        continue
      if blocked & set(job.deps):
        blocked.add(job.name)
        self.say(f"[{self.progress()}] skipped (a dependency failed): "
                 f"{job.name}")
        continue
      self.say(f"[{self.progress()}] starting {job.name} (log: "
               f"{os.path.join(state_dir(job), LOG)})")
      if not self.run_one(job):
        blocked.add(job.name)
        self.failed.append(job.name)
      else:
        self.say(f"  finished {job.name} in "
                 f"{_fmt_minutes(self.minutes[job.kind][-1])}")
    self.say(f"[{self.progress()}] "
             + (f"{len(self.failed)} failed: {', '.join(self.failed)}"
                if self.failed else "all finished"))
    return 1 if self.failed else 0


def select(jobs: Sequence[Job], kinds: Sequence[str]) -> list[Job]:
  """The jobs of the given kinds and every job they depend on."""
  bad = sorted(set(kinds) - set(KINDS))
  if bad:
    raise ValueError(f"unknown job kinds {bad}; known: {', '.join(KINDS)}")
  by_name = {j.name: j for j in jobs}
  wanted: set[str] = set()

  def want(name):
    if name not in wanted:
      wanted.add(name)
      for d in by_name[name].deps:
        want(d)

  for j in jobs:
    if j.kind in kinds:
      want(j.name)
  return [j for j in jobs if j.name in wanted]

