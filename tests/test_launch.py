"""The TPU launcher through a fake gcloud first on PATH (no network).

The fake (tests/fake_tpu.py) records every call's argv, answers `describe`
with states the test writes, and (with FAKE_TPU_HOSTS) runs
`ssh --command=CMD` once per simulated host as separate local processes,
each with its own HOME, and `storage cp` into a local directory standing
for the bucket. tests/test_pod_rehearsal.py runs a real training job
through it.
"""

import json
import os
import shlex
import subprocess
import time

import pytest

from launch.tpu import cli
from tests import fake_tpu


# Stands for .venv/bin/python on a host: bert_jax.main until SIGTERM, on
# which it "checkpoints" and exits 0, as the trainer does.
FAKE_TRAINER = """#!/bin/bash
echo "args: $*"
trap 'echo "SIGTERM: checkpoint saved at step 7"; exit 0' TERM
echo "step 7"
while true; do sleep 0.05; done
"""

BASE = ["--name=bert-base", "--zone=europe-west4-a", "--bucket=gs://my-bucket",
        "--repo=https://example.com/bert_jax.git", "--commit=abc123"]


@pytest.fixture
def gcloud(tmp_path, monkeypatch):
  """The fake gcloud on PATH; returns (calls(), set_states(*states))."""
  bin_dir = tmp_path / "bin"
  fake_tpu.install(str(bin_dir))
  log, state = tmp_path / "calls.jsonl", tmp_path / "state"
  state.write_text("READY")
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
  monkeypatch.setenv("FAKE_GCLOUD_STATE", str(state))
  monkeypatch.setenv("FAKE_GCS", str(tmp_path / "gcs"))

  def calls(clear=True):
    out = ([json.loads(l) for l in log.read_text().splitlines()]
           if log.exists() else [])
    if clear and log.exists():
      log.unlink()
    return out

  def set_states(*states):
    state.write_text("\n".join(states))

  return calls, set_states


def _dry_run(capsys, argv):
  assert cli.main([argv[0], "--dry-run", *argv[1:]]) in (0, cli.EX_TEMPFAIL)
  out = capsys.readouterr().out.splitlines()
  return [shlex.split(l) for l in out if l and not l.startswith("#")]


CASES = [
    ("create", [], ()),
    ("create", ["--spot"], ()),
    ("create", ["--reserved", "--recipe=large-v3-128"], ()),
    ("setup", [], ()),
    ("run", ["--", "--config.num_train_steps=1000"], ()),
    ("status", [], ("READY",)),
    ("status", [], ("PREEMPTED",)),
    ("logs", ["--worker=all", "--lines=5"], ()),
    ("stop", [], ()),
    ("delete", [], ()),
    ("delete", ["--spot"], ()),
    ("resume", [], ("READY",)),
    ("resume", [], ("PREEMPTED",)),
    ("resume", [], ("MISSING",)),
    ("resume", [], ("STOPPED",)),
    ("resume", [], ("CREATING", "READY")),
    ("resume", ["--spot", "--recipe=large-v3-128"], ("SUSPENDED", "ACTIVE")),
    ("resume", ["--reserved"], ("MISSING", "WAITING_FOR_RESOURCES",
                                "ACTIVE")),
]


@pytest.mark.parametrize("sub,flags,states", CASES)
def test_real_mode_runs_exactly_what_the_dry_run_prints(gcloud, capsys, sub,
                                                        flags, states):
  calls, set_states = gcloud
  argv = [sub, *BASE, "--poll-seconds=0", *flags]
  set_states(*states or ("READY",))
  printed = _dry_run(capsys, argv)
  # A dry run runs only the describe that decides the branch.
  dry_calls = calls()
  assert all("describe" in c for c in dry_calls)
  assert dry_calls == printed[:len(dry_calls)]
  set_states(*states or ("READY",))
  assert cli.main(argv) == 0
  # Waiting for READY repeats a describe until the last state the test
  # wrote; the dry run prints that describe once.
  expected = list(printed)
  describes = [i for i, c in enumerate(printed) if "describe" in c]
  if len(describes) == 2:  # the one deciding, and the wait
    expected[describes[1]:describes[1] + 1] = [
        printed[describes[1]]] * (len(states) - 1)
  assert calls() == expected
  assert printed and all(c[0] == "gcloud" for c in printed)


def _first(capsys, *argv):
  (cmd,) = _dry_run(capsys, [argv[0], *BASE, *argv[1:]])
  return cmd


def test_create_commands_as_gcloud_documents_them(capsys):
  assert _first(capsys, "create") == [
      "gcloud", "compute", "tpus", "tpu-vm", "create", "bert-base",
      "--zone=europe-west4-a", "--accelerator-type=v3-32",
      "--version=tpu-ubuntu2204-base"]
  assert _first(capsys, "create", "--spot", "--recipe=large-v3-128",
                "--project=p1") == [
      "gcloud", "compute", "tpus", "queued-resources", "create", "bert-base",
      "--zone=europe-west4-a", "--node-id=bert-base",
      "--accelerator-type=v3-128", "--runtime-version=tpu-ubuntu2204-base",
      "--spot", "--project=p1"]
  assert _first(capsys, "create", "--recipe=base-v3-8", "--reserved",
                "--accelerator=v3-256")[8:] == [
      "--accelerator-type=v3-256", "--runtime-version=tpu-ubuntu2204-base",
      "--reserved"]
  assert _first(capsys, "delete", "--spot")[3:] == [
      "queued-resources", "delete", "bert-base", "--zone=europe-west4-a",
      "--force", "--quiet"]


def _script(cmd):
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh",
                     "bert-base"]
  (script,) = [a.split("=", 1)[1] for a in cmd if a.startswith("--command=")]
  return script


def test_remote_scripts_parse_and_hold_the_recipe(capsys):
  setup = _script(_first(capsys, "setup"))
  run = _script(_first(capsys, "run", "--recipe=large-v3-128", "--",
                       "--config.num_train_steps=10"))
  for s in (setup, run, _script(_first(capsys, "stop")),
            _script(_first(capsys, "logs")),
            _script(_first(capsys, "status", "--state=READY"))):
    subprocess.run(["bash", "-n", "-c", s], check=True)
  assert "--worker=all" in _first(capsys, "setup")
  for piece in ("uv python install 3.11",
                "git clone -q https://example.com/bert_jax.git",
                "git checkout -q --force --detach abc123",
                "-r requirements.txt -e .", '"jax[tpu]==$('):
    assert piece in setup
  assert "gcsfuse" not in setup  # the trainer reads and writes gs:// itself
  # Idempotent: every installation is guarded by a check.
  for guard in ("command -v uv", '[ -d "$HOME/bert_jax/.git" ]',
                "[ -x .venv/bin/python ]"):
    assert guard in setup
  train = shlex.split(run.split("nohup setsid bash -c ", 1)[1])[0]
  subprocess.run(["bash", "-n", "-c", train], check=True)
  # shellcheck-clean. The detached trainer's script is single-quoted on
  # purpose (it expands on the host, later): checked on its own, and
  # SC2016 ("expressions don't expand in single quotes") is off for it.
  for s in (setup, train, _script(_first(capsys, "stop")),
            _script(_first(capsys, "logs")),
            _script(_first(capsys, "status", "--state=READY"))):
    _shellcheck(s)
  _shellcheck(run, "--exclude=SC2016")
  assert (".venv/bin/python -m bert_jax.main --jax_distributed "
          "--config=configs/pretrain.py:large --config.mesh.ici_shape=-1,1,1 "
          "--config.optimizer.grad_accum_steps=1 "
          "--workdir=gs://my-bucket/runs/bert-base "
          "--config.data.data_dir=gs://my-bucket/data_128 "
          "--config.data.phase2_data_dir=gs://my-bucket/data_512 "
          "--config.num_train_steps=10") in train
  assert "gs://my-bucket/logs/bert-base/$(hostname).log" in train
  # --config replaces the recipe's (experiments run ablations this way).
  run = _script(_first(capsys, "run", "--recipe=base-v3-32",
                       "--config=configs/pretrain.py:objective=no_nsp"))
  assert (" --config=configs/pretrain.py:objective=no_nsp "
          "--config.mesh.ici_shape=-1,1,1 ") in run
  assert "pretrain.py:base" not in run


def _shellcheck(script, *args):
  res = subprocess.run(["shellcheck", "--shell=bash", *args, "-"],
                       input=script, text=True, capture_output=True)
  assert res.returncode == 0, res.stdout


def test_launch_shell_scripts_are_shellcheck_clean():
  scripts = [os.path.join(fake_tpu.ROOT, "launch", n)
             for n in sorted(os.listdir(os.path.join(fake_tpu.ROOT, "launch")))
             if n.endswith(".sh")]
  assert scripts
  res = subprocess.run(["shellcheck", *scripts], capture_output=True,
                       text=True)
  assert res.returncode == 0, res.stdout


def test_resume_after_preemption_recreates_and_reruns(gcloud, capsys):
  calls, set_states = gcloud
  create, setup, run = (_first(capsys, s) for s in ("create", "setup", "run"))
  set_states("PREEMPTED")
  assert cli.main(["resume", *BASE]) == 0
  describe = ["gcloud", "compute", "tpus", "tpu-vm", "describe", "bert-base",
              "--zone=europe-west4-a", "--format=value(state)"]
  delete = ["gcloud", "compute", "tpus", "tpu-vm", "delete", "bert-base",
            "--zone=europe-west4-a", "--quiet"]
  assert calls() == [describe, delete, create, setup, run]
  # Spot, through a queued resource: suspended, re-queued, waited for.
  spot = ["--spot", "--poll-seconds=0"]
  qcreate = _first(capsys, "create", *spot)
  set_states("SUSPENDED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE")
  assert cli.main(["resume", *BASE, *spot]) == 0
  got = calls()
  qdescribe = ["gcloud", "compute", "tpus", "queued-resources", "describe",
               "bert-base", "--zone=europe-west4-a",
               "--format=value(state.state)"]
  assert got[:3] == [qdescribe, _first(capsys, "delete", *spot), qcreate]
  assert got[3:6] == [qdescribe] * 3 and got[6:] == [setup, run]


def test_resume_waits_out_and_refuses_unsettled_states(gcloud, capsys):
  calls, set_states = gcloud
  set_states("DELETING")
  assert cli.main(["resume", *BASE]) == cli.EX_TEMPFAIL
  assert [c[4] for c in calls()] == ["describe"]  # nothing else was touched
  set_states("WAITING_FOR_RESOURCES")
  assert cli.main(["resume", *BASE, "--spot", "--poll-seconds=0",
                   "--wait-minutes=0"]) == cli.EX_TEMPFAIL
  assert all(c[4] == "describe" for c in calls())


def test_bad_input_is_one_clear_error(gcloud, capsys):
  calls, _ = gcloud
  assert cli.main(["run", *BASE[:2], "--bucket=my-bucket"]) == 1
  assert "--bucket='my-bucket': give gs://BUCKET" in capsys.readouterr().err
  assert cli.main(["create", "--name=Bert_Base", "--zone=z"]) == 1
  assert "--name='Bert_Base'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["create", "--name=a", "--zone=z", "--spot", "--reserved"])
  assert calls() == []


def _wait_for(predicate, what, timeout=20.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


def test_simulated_hosts_run_detached_stop_and_copy_logs(gcloud, tmp_path,
                                                        monkeypatch, capfd):
  """`ssh --worker=all` runs the script on 4 local 'hosts' (a v3-32)."""
  root = tmp_path / "hosts"
  hosts = [f"worker-{i}" for i in range(4)]
  for h in hosts:
    (root / h / "bin").mkdir(parents=True)
    (root / h / "bert_jax" / ".venv" / "bin").mkdir(parents=True)
    hostname = root / h / "bin" / "hostname"
    hostname.write_text(f"#!/bin/sh\necho {h}\n")
    python = root / h / "bert_jax" / ".venv" / "bin" / "python"
    python.write_text(FAKE_TRAINER)
    for exe in (hostname, python):
      exe.chmod(0o755)
  monkeypatch.setenv("FAKE_TPU_HOSTS", str(root))
  logs = lambda h: root / h / "bert_jax_logs"
  flags = [*BASE, "--log-sync-seconds=1"]
  try:
    assert cli.main(["run", *flags]) == 0
    _wait_for(lambda: all("step 7" in _read(logs(h) / "train.log")
                          for h in hosts), "the trainers to start")
    # `run` returned only after every host's pid file was written.
    assert all(_read(logs(h) / "train.pid").strip() for h in hosts)
    pids = {h: int(_read(logs(h) / "train.pid")) for h in hosts}
    assert len(set(pids.values())) == 4
    assert cli.main(["status", *flags]) == 0
    out = capfd.readouterr().out
    assert all(f"{h}: running: step 7" in out for h in hosts)
    assert cli.main(["run", *flags]) == 0  # a second run starts nothing
    out = capfd.readouterr().out
    assert all(f"{h}: already running (pid {pids[h]})" in out for h in hosts)
    assert cli.main(["logs", *flags, "--worker=2", "--lines=1"]) == 0
    assert capfd.readouterr().out.strip() == "step 7"
    assert cli.main(["stop", *flags]) == 0
    _wait_for(lambda: all((logs(h) / "train.rc").exists() for h in hosts),
              "the trainers to exit")
  finally:
    for h in hosts:  # never leave a detached process behind
      pid = _read(logs(h) / "train.pid")
      if pid and not (logs(h) / "train.rc").exists():
        try:
          os.kill(int(pid), 15)
        except ProcessLookupError:
          pass
  for h in hosts:
    assert _read(logs(h) / "train.rc").strip() == "0"
    log = _read(logs(h) / "train.log")
    assert "args: -m bert_jax.main --jax_distributed" in log
    assert "SIGTERM: checkpoint saved at step 7" in log
    _wait_for(lambda h=h: "exit 0" in _read(
        tmp_path / "gcs" / "my-bucket" / "logs" / "bert-base" / f"{h}.log"),
              "the log in the bucket")
  assert cli.main(["status", *flags]) == 0
  out = capfd.readouterr().out
  assert all(f"{h}: exited 0" in out for h in hosts)


def _read(path) -> str:
  try:
    return open(path).read()
  except FileNotFoundError:
    return ""



def test_readme_shows_what_the_dry_run_prints(capsys):
  with open(os.path.join(fake_tpu.ROOT, "README.md")) as f:
    shown = {l.strip() for l in f if l.startswith("    ")}
  flags = ["--name=bert-base", "--zone=europe-west4-a", "--recipe=base-v3-32",
           "--bucket=gs://my-bucket",
           "--repo=https://github.com/me/bert_jax.git", "--commit=0123abc"]
  assert ("python -m launch.tpu create " + " ".join(flags) + " --dry-run"
          in shown)
  for argv in (["create"], ["setup"], ["run"],
               ["resume", "--state=PREEMPTED"]):
    assert cli.main([argv[0], *flags, *argv[1:], "--dry-run"]) == 0
    for line in capsys.readouterr().out.splitlines():
      assert line in shown, line
