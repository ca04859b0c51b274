"""A v3-32 pod rehearsal on this machine: the real launcher, a fake gcloud.

`python -m launch.tpu` (its real command builder and remote scripts) drives
tests/fake_tpu.py's gcloud, which turns a v3-32's four hosts into four
local `jax.distributed` processes on 127.0.0.1 (one CPU device each), with
the workdir and the data in a GCS emulator (fake-gcs-server). The model is
tiny and the run a few steps; the recipe's flags are the real ones with
overrides after `--`.
"""

import json
import os
import signal
import socket
import time

import numpy as np
import pytest

from bert_jax import pretrained
from bert_jax import storage
from launch.tpu import cli
from tests import fake_tpu
from tests import test_train
from tests.test_storage import _steps_committed

STEPS = 6
TINY = [f"--config.num_train_steps={STEPS}", "--config.phase2_start_step=0",
        "--config.model.preset=tiny", "--config.model.dtype=float32",
        "--config.model.scan_layers=false",
        "--config.train_batch_size=16", "--config.eval_batch_size=16",
        "--config.phase2_train_batch_size=16",
        "--config.max_seq_length=32", "--config.max_predictions_per_seq=5",
        "--config.num_warmup_steps=2", "--config.log_every_steps=1",
        "--config.save_checkpoints_steps=2", "--config.num_eval_steps=1",
        f"--config.data.vocab_file={test_train.VOCAB}",
        "--heartbeat_timeout_seconds=15"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Pod:
  """The fake gcloud on PATH, its hosts, and the launcher's flags."""

  def __init__(self, tmp_path, monkeypatch, gcs, data_url):
    self.hosts = tmp_path / "hosts"
    self.hosts.mkdir()
    bin_dir = str(tmp_path / "bin")
    fake_tpu.install(bin_dir)
    self.state = tmp_path / "state"
    self.state.write_text("READY")
    image = tmp_path / "image.json"
    image.write_text(json.dumps({
        "coordinator": f"127.0.0.1:{_free_port()}", "commit": "abc123",
        "env": gcs.env}))
    for k, v in {"PATH": f"{bin_dir}:{os.environ['PATH']}",
                 "FAKE_GCLOUD_LOG": str(tmp_path / "calls.jsonl"),
                 "FAKE_GCLOUD_STATE": str(self.state),
                 "FAKE_TPU_HOSTS": str(self.hosts),
                 "FAKE_TPU_IMAGE": str(image), **gcs.env}.items():
      monkeypatch.setenv(k, v)
    monkeypatch.delenv("FAKE_GCS", raising=False)
    self.bucket = f"gs://{gcs.bucket}"
    self.data_url = data_url

  def flags(self, workdir):
    return ["--name=bert-pod", "--zone=europe-west4-a",
            "--recipe=base-v3-32", f"--bucket={self.bucket}",
            "--repo=https://example.com/bert_jax.git", "--commit=abc123",
            f"--workdir={workdir}", f"--data-dir={self.data_url}",
            "--log-sync-seconds=60", "--poll-seconds=0"]

  def launch(self, sub, workdir, *train_flags):
    argv = [sub, *self.flags(workdir), "--", *TINY, *train_flags]
    assert cli.main(argv) == 0

  def names(self):
    return sorted(os.listdir(self.hosts))

  def read(self, host, name):
    try:
      with open(self.hosts / host / "bert_jax_logs" / name) as f:
        return f.read()
    except FileNotFoundError:
      return ""

  def wait(self, predicate, what, timeout):
    """Polls predicate; fails at the timeout, or at once when every
    trainer has exited without it coming true."""
    deadline = time.monotonic() + timeout
    while True:
      ended = self.exited()  # before predicate: what the exit left counts
      if predicate():
        return
      if ended or time.monotonic() > deadline:
        logs = {h: self.read(h, "train.log")[-3000:] for h in self.names()}
        raise AssertionError(
            f"{'the trainers exited' if ended else 'timed out'} waiting for "
            f"{what}: {logs}")
      time.sleep(0.5)

  def exited(self):
    return all(self.read(h, "train.rc") for h in self.names())

  def kill(self, hosts=None):
    for h in hosts or self.names():
      pid = self.read(h, "train.pid")
      if pid and not self.read(h, "train.rc"):
        try:
          os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
          pass


def _weights(workdir, local):
  path = storage.cached_copy(f"{workdir}/export/bert_jax", local)
  return pretrained._flatten(pretrained.load_bert_jax(path)[1])  # pylint: disable=protected-access


@pytest.fixture
def pod(gcs, data_dir, tmp_path, monkeypatch):
  data_url = f"gs://{gcs.bucket}/rehearsal/data_32"
  if not storage.exists(f"{data_url}/manifest.json"):
    storage.upload_tree(data_dir, data_url)
  p = Pod(tmp_path, monkeypatch, gcs, data_url)
  try:
    yield p
  finally:
    p.kill()  # never leave a detached trainer behind


@pytest.mark.slow(longest=True)  # the suite starts it first
def test_v3_32_host_lost_stops_the_others_and_resumes_bitwise(pod, tmp_path):
  """One host of four is lost (SIGKILL, as when its VM is preempted): the
  other three stop by themselves with a clear error, bounded by the
  heartbeat timeout; `resume` then finishes the job on a re-created slice
  with the weights of the same job run uninterrupted, bit for bit."""
  killed = f"{pod.bucket}/rehearsal/killed"
  pod.launch("create", killed)
  assert pod.names() == [f"worker-{i}" for i in range(4)]
  pod.launch("setup", killed)
  pod.launch("run", killed)
  pod.wait(lambda: [s for s in _steps_committed(killed) if 2 <= s < STEPS],
           "a checkpoint", 600)
  pod.kill(["worker-2"])
  t = time.monotonic()
  # Bounded by the heartbeat timeout (15 s here) plus slack for this
  # shared machine.
  pod.wait(pod.exited, "the other hosts to stop", 120)
  print(f"the other hosts stopped {time.monotonic() - t:.1f} s after")
  assert pod.read("worker-2", "train.rc").strip() == "137"
  for h in ("worker-0", "worker-1", "worker-3"):
    assert pod.read(h, "train.rc").strip() not in ("", "0")
    log = pod.read(h, "train.log")
    assert (f"error: process {h[-1]} of 4 stopped: " in log
            or "This most likely indicates that another task died" in log
            ), log[-3000:]
  # Which of the two words a host ends with is a race: a host inside a
  # collective prints the one-line summary; one waiting in Orbax's
  # commit barrier, or polled first by JAX's coordination service, is
  # aborted by the service (its log says another task died).
  assert not storage.exists(f"{killed}/results.json")
  pod.state.write_text("PREEMPTED")
  # resume: delete, create (fresh disks), setup, run.
  pod.launch("resume", killed)
  pod.wait(pod.exited, "the resumed run to finish", 600)
  for h in pod.names():
    assert pod.read(h, "train.rc").strip() == "0", pod.read(h, "train.log")
  assert "resumed from the checkpoint at step" in pod.read("worker-0",
                                                           "train.log")
  results = json.loads(storage.read_text(f"{killed}/results.json"))
  assert results["steps"] == STEPS and results["num_devices"] == 4

  # The same job, uninterrupted, on the same (simulated) slice.
  clean = f"{pod.bucket}/rehearsal/clean"
  pod.launch("run", clean)
  pod.wait(pod.exited, "the uninterrupted run", 600)
  a = _weights(killed, str(tmp_path / "a"))
  b = _weights(clean, str(tmp_path / "b"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # Every host's log reached the bucket.
  for h in pod.names():
    assert "exit 0" in storage.read_text(
        f"{pod.bucket}/logs/bert-pod/{h}.log")
