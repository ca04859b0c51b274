"""Pre-trains BERT on a Cloud TPU v3 slice with gcloud.

    python -m launch.tpu SUBCOMMAND --name=NAME --zone=ZONE [flags] [-- TRAIN_FLAGS]

  create   the TPU VM (on demand), or a queued resource with --spot/--reserved
  setup    on every host: Python 3.11 (uv), the repository at --commit,
           requirements.txt and jax[tpu] (idempotent)
  run      on every host, detached (setsid + nohup): bert_jax.main
           --jax_distributed with the recipe's flags; a host's log goes to
           ~/bert_jax_logs/train.log and gs://BUCKET/logs/NAME/HOSTNAME.log
  status   the TPU's state, then each host's: running (last log line),
           exited (status) or not started
  logs     the last --lines of a host's log (--worker=0 by default)
  stop     SIGTERM to the trainer on every host: it checkpoints and exits
  delete   the TPU VM (or the queued resource and its TPU)
  resume   whatever the state asks (re-create after a preemption, start a
           stopped VM, wait for one on its way), then setup and run: the
           trainer continues from the newest checkpoint in the workdir

Every subcommand takes the same flags (give `resume` the ones `create` and
`run` had). `--dry-run` prints the gcloud commands, one a line,
shell-quoted, and runs none of them except the read-only `describe` that
`status` and `resume` decide by (`--state=STATE` skips that too); without
it the same commands run, each echoed to stderr. Flags after `--` go to
bert_jax.main after the recipe's (e.g. `-- --config.num_train_steps=1000`).

Recipes (launch/tpu/recipes.py): base-v3-32, large-v3-128, base-v3-8, all
the paper's batch 256 with 90% of the steps at seq 128 and 10% at 512.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from launch.tpu import commands
from launch.tpu import recipes

EX_TEMPFAIL = 75  # resume: not there yet, try again later
SUBCOMMANDS = ("create", "setup", "run", "status", "logs", "stop", "delete",
               "resume")
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class LaunchError(Exception):
  pass


def _git(*args: str) -> str:
  try:
    return subprocess.run(["git", "-C", _ROOT, *args], check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  a = common.add_argument
  a("--name", required=True, help="TPU (and queued resource) name.")
  a("--zone", required=True, help="e.g. europe-west4-a (has v3).")
  a("--project", default="", help="gcloud project (default: gcloud's).")
  a("--recipe", default="base-v3-32", choices=sorted(recipes.RECIPES))
  a("--accelerator", choices=recipes.ACCELERATORS,
    help="Overrides the recipe's slice.")
  a("--runtime", default="tpu-ubuntu2204-base", help="TPU VM software.")
  provisioning = common.add_mutually_exclusive_group()
  provisioning.add_argument("--spot", action="store_true",
                            help="A spot TPU, through a queued resource.")
  provisioning.add_argument("--reserved", action="store_true",
                            help="From your reservation, queued resource.")
  a("--bucket", default="", help="gs://BUCKET: data, the workdir "
    "(checkpoints, TensorBoard, results) and logs live there (setup, run, "
    "resume).")
  a("--repo", default="", help="git URL the hosts clone (default: this "
    "checkout's origin).")
  a("--commit", default="", help="Commit the hosts check out (default: "
    "this checkout's HEAD; push it first).")
  a("--workdir", default="", help="bert_jax.main --workdir (default "
    "gs://BUCKET/runs/NAME).")
  a("--config", default="", help="bert_jax.main --config instead of the "
    "recipe's, e.g. configs/pretrain.py:size=base,objective=no_nsp (the "
    "slice and mesh stay the recipe's).")
  a("--data-dir", default="", help="Phase 1 (seq 128) shards (default "
    "gs://BUCKET/data_128).")
  a("--phase2-data-dir", default="", help="Phase 2 (seq 512) shards "
    "(default gs://BUCKET/data_512).")
  a("--python", default="3.11", help="Python the hosts' venv uses.")
  a("--worker", default="0", help="logs: which host ('all' for every one).")
  a("--lines", type=int, default=100, help="logs: how many lines.")
  a("--log-sync-seconds", type=int, default=300,
    help="run: how often a host copies its log to the bucket.")
  a("--state", default="", help="status/resume: act as if describe "
    "answered STATE (no describe is run).")
  a("--poll-seconds", type=float, default=60.0,
    help="resume: between describes while the TPU is on its way.")
  a("--wait-minutes", type=float, default=180.0,
    help="resume: give up waiting for READY after this long (exit 75).")
  a("--dry-run", action="store_true",
    help="Print the gcloud commands instead of running them.")
  p = argparse.ArgumentParser(
      prog="python -m launch.tpu", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n\n".join(__doc__.split("\n\n")[1:]))
  sub = p.add_subparsers(dest="subcommand", required=True)
  for name in SUBCOMMANDS:
    sub.add_parser(name, parents=[common])
  return p


class Gcloud:
  """Prints (dry run) or runs gcloud commands; records what it issued."""

  def __init__(self, dry_run: bool, out=None, err=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout
    self.err = err or sys.stderr

  def _show(self, argv: Sequence[str]) -> None:
    if self.dry_run:
      print(shlex.join(argv), file=self.out, flush=True)
    else:
      print("+ " + shlex.join(argv), file=self.err, flush=True)

  def note(self, text: str) -> None:
    """A comment line: in a dry run, among the commands."""
    print(f"# {text}", file=self.out if self.dry_run else self.err,
          flush=True)

  def run(self, argv: Sequence[str]) -> None:
    self._show(argv)
    if self.dry_run:
      return
    try:
      rc = subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError as e:
      raise LaunchError("gcloud not found on PATH: install the Google "
                        "Cloud CLI") from e
    if rc:
      raise LaunchError(f"exit status {rc}: {shlex.join(argv)}")

  def state(self, argv: Sequence[str]) -> str:
    """Runs a describe (read-only: in a dry run too) and returns the state."""
    self._show(argv)
    try:
      res = subprocess.run(list(argv), capture_output=True, text=True,
                           check=False)
    except FileNotFoundError as e:
      raise LaunchError("gcloud not found on PATH (a dry run of status or "
                        "resume asks it for the state; --state=STATE "
                        "skips that)") from e
    if res.returncode:
      if "NOT_FOUND" in res.stderr:
        return commands.MISSING
      raise LaunchError(f"exit status {res.returncode}: {shlex.join(argv)}"
                        f"\n{res.stderr.strip()}")
    return res.stdout.strip() or commands.MISSING


def _target(args) -> commands.Target:
  recipe = recipes.RECIPES[args.recipe]
  provisioning = ("spot" if args.spot else "reserved" if args.reserved
                  else "on-demand")
  return commands.Target(args.name, args.zone,
                         args.accelerator or recipe.accelerator,
                         args.runtime, args.project, provisioning)


def _job(args, extra: Sequence[str]) -> commands.Job:
  if not args.bucket.startswith("gs://") or not args.bucket[5:].strip("/"):
    raise LaunchError(f"--bucket={args.bucket!r}: give gs://BUCKET (data, "
                      "checkpoints and logs live there)")
  repo = args.repo or _git("config", "--get", "remote.origin.url")
  commit = args.commit or _git("rev-parse", "HEAD")
  if not repo:
    raise LaunchError("--repo: this checkout has no origin remote; give "
                      "the git URL the hosts clone")
  if not commit:
    raise LaunchError("--commit: not in a git checkout; give the commit")
  recipe = recipes.RECIPES[args.recipe]
  bucket = args.bucket.rstrip("/")
  workdir = args.workdir or f"{bucket}/runs/{args.name}"
  flags = [*recipe.flags(args.config), f"--workdir={workdir}",
           f"--config.data.data_dir={args.data_dir or bucket + '/data_128'}",
           "--config.data.phase2_data_dir="
           f"{args.phase2_data_dir or bucket + '/data_512'}", *extra]
  return commands.Job(repo, commit, args.bucket, tuple(flags), args.python,
                      args.log_sync_seconds)


def _state(g: Gcloud, args, target) -> str:
  if args.state:
    return args.state.upper()
  return g.state(commands.describe(target))


def _wait_until_ready(g: Gcloud, args, target) -> None:
  """Describes every --poll-seconds until READY/ACTIVE (dry run: once)."""
  g.note(f"every {args.poll_seconds:g} s until "
         f"{' or '.join(commands.READY)}:")
  deadline = time.monotonic() + 60 * args.wait_minutes
  while True:
    argv = commands.describe(target)
    if g.dry_run:
      g._show(argv)  # pylint: disable=protected-access
      return
    state = g.state(argv)
    if state in commands.READY:
      return
    if state not in commands.COMING and state != commands.MISSING:
      raise LaunchError(f"{target.name} went to {state} while waiting")
    if time.monotonic() > deadline:
      raise TimeoutError(f"{target.name} is still {state} after "
                         f"{args.wait_minutes:g} min")
    time.sleep(args.poll_seconds)


def _resume(g: Gcloud, args, target, job) -> int:
  state = _state(g, args, target)
  g.note(f"{target.name} is {state}")
  if state in commands.GONE:
    g.run(commands.delete(target))
    g.run(commands.create(target))
  elif state == commands.MISSING:
    g.run(commands.create(target))
  elif state == "STOPPED":
    g.run(commands.start(target))
  elif state not in commands.COMING and state not in commands.READY:
    g.note(f"{state}: nothing to do until it settles; resume again later")
    return EX_TEMPFAIL
  # A queued resource's TPU arrives after `create` returns; a TPU VM
  # `create` or `start` waits for it.
  if (target.queued and state not in commands.READY) or (
      state in commands.COMING):
    try:
      _wait_until_ready(g, args, target)
    except TimeoutError as e:
      g.note(f"{e}; resume again later")
      return EX_TEMPFAIL
  g.run(commands.ssh(target, commands.setup_script(job)))
  g.run(commands.ssh(target, commands.run_script(job, target.name)))
  return 0


def dispatch(args, extra: Sequence[str], g: Gcloud) -> int:
  if not _NAME.match(args.name):
    raise LaunchError(f"--name={args.name!r}: lower-case letters, digits "
                      "and '-', starting with a letter")
  target = _target(args)
  sub = args.subcommand
  if sub == "create":
    g.run(commands.create(target))
    if target.queued:
      g.note("a queued resource: `status` says when it is ACTIVE; then "
             "setup and run (or resume, which waits)")
  elif sub == "setup":
    g.run(commands.ssh(target, commands.setup_script(_job(args, extra))))
  elif sub == "run":
    g.run(commands.ssh(target, commands.run_script(_job(args, extra),
                                                   target.name)))
  elif sub == "status":
    state = _state(g, args, target)
    if g.dry_run:
      g.note(f"{target.name} is {state}")
    else:
      print(f"{target.name}: {state}", flush=True)
    if state in commands.READY:
      g.run(commands.ssh(target, commands.status_script()))
  elif sub == "logs":
    g.run(commands.ssh(target, commands.logs_script(args.lines),
                       worker=args.worker))
  elif sub == "stop":
    g.run(commands.ssh(target, commands.stop_script()))
  elif sub == "delete":
    g.run(commands.delete(target))
  elif sub == "resume":
    return _resume(g, args, target, _job(args, extra))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  args = _parser().parse_args(argv)
  g = Gcloud(args.dry_run)
  try:
    return dispatch(args, extra, g)
  except LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
