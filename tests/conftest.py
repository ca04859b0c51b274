"""Shared test set-up: 8 forced CPU devices, set before jax is imported."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA compilation cache for the whole run, shared by the
# pytest-xdist workers and every subprocess they start (they inherit the
# environment): the many runs of the same tiny programs (a job, killed,
# resumed; the same step in several tests) compile once. pytest's own
# process names it for its pid and sets it before the xdist workers start
# (they inherit it), and removes it at the end: nothing carries over
# between runs.
_XLA_CACHE = os.path.join(tempfile.gettempdir(),
                          f"bert_jax_test_xla_cache_{os.getpid()}")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """A real GCS emulator (fake-gcs-server) on 127.0.0.1 with one bucket.

  In this process STORAGE_EMULATOR_HOST is set for the session (bert_jax's
  clients read it); subprocesses get it from `gcs.env`.
  """
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
  server = gcs_emulator.GcsEmulator(str(tmp_path_factory.mktemp("gcs")))
  os.environ.update(server.env)
  try:
    yield server
  finally:
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    server.stop()


def pytest_configure(config):
  # With xdist: hand out one test at a time (its default sends each worker
  # a quarter of its share up front, which would give one worker every
  # long test below).
  if getattr(config.option, "maxschedchunk", "absent") is None:
    config.option.maxschedchunk = 1


def pytest_collection_modifyitems(items):
  """The long end-to-end tests (marked slow) first, the longest of them
  (slow(longest=True)) before the others, the rest in file order: dealt
  out one at a time, the short tests then fill the end instead of one
  worker finishing a long test alone."""
  def rank(item):
    slow = item.get_closest_marker("slow")
    return 2 if slow is None else 0 if slow.kwargs.get("longest") else 1
  items.sort(key=rank)


def pytest_sessionfinish(session):
  del session
  if "PYTEST_XDIST_WORKER" not in os.environ:  # the last process to finish
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
