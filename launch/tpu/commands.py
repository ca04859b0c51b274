"""Every gcloud command the launcher runs, and the shell it runs on the hosts.

Pure functions of a `Target` (which TPU) and a `Job` (what to run there):
argv lists for gcloud, and one-line bash scripts for
`gcloud compute tpus tpu-vm ssh --worker=all --command=...`. One line, so
that a dry run prints one command per line, shell-quoted.

On each host: the repository in ~/bert_jax at one commit, a Python 3.11
virtual environment in ~/bert_jax/.venv (the TPU VM image ships 3.10; the
project needs 3.11+), and ~/bert_jax_logs/ with the log (copied to
gs://BUCKET/logs/NAME/HOSTNAME.log), the trainer's pid and exit status.
The trainer reads its data from and writes its workdir (checkpoints,
TensorBoard, results, exports) to gs:// URLs in the bucket
(`bert_jax.storage`), so a re-created slice resumes from them; nothing
is mounted.
"""

from __future__ import annotations

import dataclasses
import shlex

GCLOUD = "gcloud"
TPU_VM = ("compute", "tpus", "tpu-vm")
QUEUED = ("compute", "tpus", "queued-resources")
REPO_DIR = "$HOME/bert_jax"
LOG_DIR = "$HOME/bert_jax_logs"
LOG = f"{LOG_DIR}/train.log"
PID = f"{LOG_DIR}/train.pid"
RC = f"{LOG_DIR}/train.rc"

# Answers of `describe` (TPU VM `state`, queued resource `state.state`).
READY = ("READY", "ACTIVE")
GONE = ("PREEMPTED", "TERMINATED", "SUSPENDED", "FAILED")  # re-create
COMING = ("CREATING", "STARTING", "RESTARTING", "REPAIRING", "ACCEPTED",
          "PROVISIONING", "WAITING_FOR_RESOURCES")  # wait for READY
MISSING = "MISSING"  # describe answered NOT_FOUND


@dataclasses.dataclass(frozen=True)
class Target:
  """Which TPU: a TPU VM, or a queued resource (spot or reserved) of one."""
  name: str
  zone: str
  accelerator: str
  runtime: str = "tpu-ubuntu2204-base"
  project: str = ""
  provisioning: str = "on-demand"  # on-demand | spot | reserved

  @property
  def queued(self) -> bool:
    return self.provisioning != "on-demand"


@dataclasses.dataclass(frozen=True)
class Job:
  """What runs on the hosts: the repository at a commit, and the trainer."""
  repo: str
  commit: str
  bucket: str  # gs://NAME
  train_flags: tuple[str, ...]  # bert_jax.main's flags
  python: str = "3.11"
  log_sync_seconds: int = 300

  @property
  def bucket_name(self) -> str:
    return self.bucket.removeprefix("gs://").strip("/")


def _gcloud(target: Target, group: tuple[str, ...], verb: str,
            *args: str) -> list[str]:
  argv = [GCLOUD, *group, verb, target.name, f"--zone={target.zone}", *args]
  if target.project:
    argv.append(f"--project={target.project}")
  return argv


def create(target: Target) -> list[str]:
  if target.queued:
    return _gcloud(target, QUEUED, "create", f"--node-id={target.name}",
                   f"--accelerator-type={target.accelerator}",
                   f"--runtime-version={target.runtime}",
                   f"--{target.provisioning}")
  return _gcloud(target, TPU_VM, "create",
                 f"--accelerator-type={target.accelerator}",
                 f"--version={target.runtime}")


def describe(target: Target) -> list[str]:
  if target.queued:
    return _gcloud(target, QUEUED, "describe", "--format=value(state.state)")
  return _gcloud(target, TPU_VM, "describe", "--format=value(state)")


def delete(target: Target) -> list[str]:
  if target.queued:  # --force: the TPU VM the request holds goes with it
    return _gcloud(target, QUEUED, "delete", "--force", "--quiet")
  return _gcloud(target, TPU_VM, "delete", "--quiet")


def start(target: Target) -> list[str]:
  return _gcloud(target, TPU_VM, "start")


def ssh(target: Target, script: str, worker: str = "all") -> list[str]:
  return _gcloud(target, TPU_VM, "ssh", f"--worker={worker}",
                 f"--command={script}")


def _line(*statements: str) -> str:
  return "; ".join(statements)


def setup_script(job: Job) -> str:
  """Idempotent: Python, the repo at the commit, its dependencies.

  `jax[tpu]` is installed at the version requirements.txt pins for jax.
  """
  q = shlex.quote
  venv_python = ".venv/bin/python"
  return _line(
      "set -euo pipefail",
      'export PATH="$HOME/.local/bin:$PATH"',
      "command -v uv >/dev/null || python3 -m pip install --user -q uv",
      f"uv python install {q(job.python)}",
      f'[ -d "{REPO_DIR}/.git" ] || git clone -q {q(job.repo)} "{REPO_DIR}"',
      f'cd "{REPO_DIR}"',
      "git fetch -q origin",
      f"git checkout -q --force --detach {q(job.commit)}",
      f"[ -x {venv_python} ] || uv venv -q --python {q(job.python)} .venv",
      f"uv pip install -q --python {venv_python} -r requirements.txt -e .",
      f"uv pip install -q --python {venv_python} "
      f"\"jax[tpu]==$({venv_python} -c 'import jax; print(jax.__version__)')\"",
      f'echo "$(hostname): ready at $(git rev-parse --short HEAD), '
      f"$({venv_python} --version), "
      f"jax $({venv_python} -c 'import jax; print(jax.__version__)')\"")


def train_command(job: Job) -> str:
  return shlex.join([".venv/bin/python", "-m", "bert_jax.main",
                     "--jax_distributed", *job.train_flags])


def run_script(job: Job, name: str) -> str:
  """Starts the trainer detached (setsid + nohup) unless it is running.

  The trainer's output goes to the host's log, copied to
  gs://BUCKET/logs/NAME/HOSTNAME.log every `log_sync_seconds` and when it
  exits; its exit status to train.rc.
  """
  dest = f"gs://{job.bucket_name}/logs/{name}/$(hostname).log"
  inner = _line(
      f'dest="{dest}"',
      f'echo "=== $(date -u +%FT%TZ) start {job.commit}" >> "{LOG}"',
      f'{train_command(job)} >> "{LOG}" 2>&1 & pid=$!',
      f'echo "$pid" > "{PID}.tmp"; mv "{PID}.tmp" "{PID}"',
      f'(while sleep {int(job.log_sync_seconds)}; do gcloud storage cp -q '
      f'"{LOG}" "$dest" >/dev/null 2>&1 || true; done) & sync=$!',
      'wait "$pid"; rc=$?',
      'kill "$sync" 2>/dev/null',
      f'echo "$rc" > "{RC}"',
      f'echo "=== $(date -u +%FT%TZ) exit $rc" >> "{LOG}"',
      f'gcloud storage cp -q "{LOG}" "$dest" >/dev/null 2>&1 || true')
  return _line(
      "set -eu",
      f'mkdir -p "{LOG_DIR}"',
      f'cd "{REPO_DIR}"',
      f'if [ -f "{PID}" ] && kill -0 "$(cat "{PID}")" 2>/dev/null; then '
      f'echo "$(hostname): already running (pid $(cat "{PID}"))"; exit 0; fi',
      f'rm -f "{RC}" "{PID}"',
      # Returns once the pid is on disk, so that a `status`, `stop` or second
      # `run` right after this one sees the trainer.
      f"nohup setsid bash -c {shlex.quote(inner)} >/dev/null 2>&1 </dev/null "
      f'& for _ in $(seq 100); do [ -s "{PID}" ] && break; sleep 0.1; done',
      f'echo "$(hostname): started; log {LOG}"')


def stop_script() -> str:
  """SIGTERM to the trainer: it saves a checkpoint and exits."""
  return _line(
      f'if [ -f "{PID}" ] && kill -0 "$(cat "{PID}")" 2>/dev/null; then '
      f'kill -TERM "$(cat "{PID}")"; '
      'echo "$(hostname): SIGTERM sent (the trainer checkpoints, then '
      'exits)"; else echo "$(hostname): not running"; fi')


def status_script() -> str:
  return _line(
      f'if [ -f "{PID}" ] && kill -0 "$(cat "{PID}")" 2>/dev/null; then '
      f'echo "$(hostname): running: $(tail -n 1 "{LOG}" | tr "\\r" "\\n" '
      '| tail -n 1)"; '
      f'elif [ -f "{RC}" ]; then echo "$(hostname): exited $(cat "{RC}")"; '
      'else echo "$(hostname): not started"; fi')


def logs_script(lines: int) -> str:
  return f'tail -n {int(lines)} "{LOG}"'
