"""Checkpoints: round trip, keep-N, corrupted newest skipped, preemption."""

import builtins
import errno
import json
import logging
import os
import re
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax import checkpoints
from bert_jax import sharding
from bert_jax import train
from tests import test_train
from tests.test_train import _exported_params
from tests.test_train import _main
from tests.test_train import _wait_for


def _state(mesh, step):
  w = jax.device_put(jnp.arange(32.0).reshape(8, 4) * step,
                     NamedSharding(mesh, P("data", None)))
  return {"step": jnp.asarray(step, jnp.int32), "params": {"w": w}}


def _abstract(state):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)


def _corrupt(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def test_round_trip_keep_n_and_corrupted_newest(tmp_path, caplog):
  mesh = sharding.create_mesh((-1, 1, 1))
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(mesh, step), {"step": step, "seed": 7},
              {"variant": "test"})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]  # keep-N dropped the oldest

  abstract = _abstract(_state(mesh, 0))
  step, state, data = ckpt.restore_latest(abstract)
  assert step == 3 and data == {"step": 3, "seed": 7}
  np.testing.assert_array_equal(state["params"]["w"],
                                np.arange(32.0).reshape(8, 4) * 3)
  assert state["params"]["w"].sharding == abstract["params"]["w"].sharding

  _corrupt(os.path.join(ckpt.directory, "3"))
  with caplog.at_level(logging.WARNING):
    step, state, data = ckpt.restore_latest(abstract)
  assert step == 2 and data["step"] == 2
  np.testing.assert_array_equal(state["params"]["w"],
                                np.arange(32.0).reshape(8, 4) * 2)
  # The warning names both steps.
  assert re.search(r"checkpoint at step 3 in \S+ is unreadable \(.*\); "
                   "resuming from step 2", caplog.text)
  ckpt.close()


def test_truncated_arrays_and_an_uncommitted_save_fall_back(tmp_path, caplog):
  """An array file cut short (a disk that lost its tail) is unreadable: the
  run falls back to the step before, saying so. A save that never reached
  Orbax's commit (its directory still has the temporary name) is no step."""
  mesh = sharding.create_mesh((-1, 1, 1))
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"))
  for step in (1, 2):
    ckpt.save(step, _state(mesh, step), {"step": step}, {})
  ckpt.wait()
  arrays = os.path.join(ckpt.directory, "2", "state", "d")
  for name in os.listdir(arrays):
    path = os.path.join(arrays, name)
    os.truncate(path, os.path.getsize(path) // 2)
  shutil.copytree(os.path.join(ckpt.directory, "1"),
                  os.path.join(ckpt.directory, "3.orbax-checkpoint-tmp"))
  reader = checkpoints.Checkpointer(ckpt.directory)
  assert reader.all_steps() == [1, 2]
  with caplog.at_level(logging.WARNING):
    step, state, _ = reader.restore_latest(_abstract(_state(mesh, 0)))
  assert step == 1 and int(state["step"]) == 1
  assert re.search(r"checkpoint at step 2 in \S+ is unreadable \(ValueError: "
                   r".*OUT_OF_RANGE.*\); resuming from step 1", caplog.text)
  # Nothing is deleted: the unreadable step stays for a person to look at.
  assert sorted(os.listdir(ckpt.directory)) == ["1", "2",
                                                "3.orbax-checkpoint-tmp"]


def _identity(**changes):
  base = {"task": "pretraining", "objective": "mlm_nsp",
          "model": {"hidden_size": 32, "num_layers": 2},
          "vocab": {"size": 8000, "sha256": "ab12"},
          "batch": {"train_batch_size": 16, "max_seq_length": 32},
          "params": {"w": [8, 4]}}
  for key, value in changes.items():
    section, name = key.split(".")
    base[section] = dict(base[section], **{name: value})
  return base


def test_checkpoint_of_another_config_is_an_error_naming_the_keys(tmp_path):
  """No fallback to an older step, nothing deleted: one error naming every
  key that differs."""
  mesh = sharding.create_mesh((-1, 1, 1))
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"))
  for step in (1, 2):
    ckpt.save(step, _state(mesh, step), {"step": step}, {},
              identity=_identity())
  ckpt.wait()
  abstract = _abstract(_state(mesh, 0))
  assert ckpt.restore_latest(abstract, _identity())[0] == 2
  other = _identity(**{"model.hidden_size": 64, "batch.train_batch_size": 32,
                       "vocab.sha256": "cd34"})
  with pytest.raises(checkpoints.IncompatibleCheckpointError) as e:
    ckpt.restore_latest(abstract, other)
  msg = str(e.value)
  assert "\n" not in msg and "checkpoint at step 2" in msg
  assert "3 differences" in msg
  for diff in ("model.hidden_size: checkpoint 32, run 64",
               "batch.train_batch_size: checkpoint 16, run 32",
               "vocab.sha256: checkpoint ab12, run cd34"):
    assert diff in msg
  with pytest.raises(checkpoints.IncompatibleCheckpointError):
    ckpt.check_latest(other)
  assert ckpt.all_steps() == [1, 2]


def _fail_opens(monkeypatch, under, times, err=errno.EIO):
  """The next `times` opens of a file under `under` fail with `err`, as a
  network file system's reads do when it hiccups (the kernel's EIO)."""
  real_open = builtins.open
  failed = []

  def flaky_open(file, *args, **kwargs):
    if str(file).startswith(under) and len(failed) < times:
      failed.append(str(file))
      raise OSError(err, os.strerror(err), str(file))
    return real_open(file, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", flaky_open)
  return failed


def test_transient_read_errors_are_retried_then_fatal(tmp_path, monkeypatch,
                                                      caplog):
  mesh = sharding.create_mesh((-1, 1, 1))
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"), retries=3,
                                  backoff_s=0.01)
  for step in (1, 2):
    ckpt.save(step, _state(mesh, step), {"step": step}, {},
              identity=_identity())
  ckpt.wait()
  abstract = _abstract(_state(mesh, 0))
  # Two failed reads, then the file system is back: the newest is read.
  failed = _fail_opens(monkeypatch, ckpt.directory, 2)
  with caplog.at_level(logging.WARNING):
    step, _, data = ckpt.restore_latest(abstract, _identity())
  assert len(failed) == 2 and step == 2 and data == {"step": 2}
  assert "retry 2 of 3" in caplog.text and "unreadable" not in caplog.text
  # A file system that stays down: an error naming the path, no fallback.
  monkeypatch.undo()
  failed = _fail_opens(monkeypatch, ckpt.directory, 1000, errno.ETIMEDOUT)
  with pytest.raises(checkpoints.CheckpointReadError,
                     match=r"checkpoint .*/ckpt/2 failed 4 times .*timed out"):
    ckpt.restore_latest(abstract, _identity())
  assert len(failed) == 4
  monkeypatch.undo()
  assert ckpt.all_steps() == [1, 2]
  # A permanent error is not retried: a missing file means a broken
  # checkpoint, and the walk goes on to the one before.
  assert not checkpoints.is_transient(FileNotFoundError(errno.ENOENT, "x"))
  assert checkpoints.is_transient(ValueError(
      "UNAVAILABLE: Error reading local file: [OS error 5]"))


def test_nothing_to_restore(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path / "empty"))
  mesh = sharding.create_mesh((-1, 1, 1))
  assert ckpt.restore_latest(_abstract(_state(mesh, 0))) is None
  ckpt.close()


def test_sigterm_sets_the_flag_and_close_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  watcher = checkpoints.PreemptionWatcher()
  assert not watcher.requested
  os.kill(os.getpid(), signal.SIGTERM)
  assert watcher.requested  # Python runs the handler before the next line
  watcher.close()
  assert signal.getsignal(signal.SIGTERM) == before


# -- end to end: the pre-training job killed, preempted, corrupted ----------


@pytest.mark.slow
def test_killed_in_an_async_write_and_resumed_run_is_bitwise_identical(
    data_dir, tmp_path):
  full, broken = str(tmp_path / "full"), str(tmp_path / "broken")
  rc, out = _main(full, data_dir)
  assert rc == 0, out[-3000:]
  results = json.load(open(os.path.join(full, "results.json")))
  assert results["steps"] == 12
  assert 0 <= results["masked_lm_accuracy"] <= 1
  assert results["next_sentence_accuracy"] > 0
  # A real kill (SIGKILL, no clean-up) inside the asynchronous write of a
  # random checkpoint: everything written, Orbax's commit (the rename of
  # its temporary directory) not yet done.
  kill_in = int(np.random.default_rng().choice([4, 6, 8]))
  marker = str(tmp_path / "paused")
  proc = _main(broken, data_dir, wait=False, env={
      "BERT_JAX_PAUSE_BEFORE_COMMIT": str(kill_in),
      "BERT_JAX_PAUSE_MARKER": marker})
  ckpt_dir = os.path.join(broken, "checkpoints")
  _wait_for(proc, lambda: os.path.exists(marker), timeout=600)
  proc.kill()
  proc.wait()
  with open(marker) as f:
    tmp_dir = f.read()
  assert os.path.isdir(tmp_dir) and os.listdir(os.path.join(tmp_dir, "state"))
  assert not os.path.exists(os.path.join(ckpt_dir, str(kill_in)))
  assert not os.path.exists(os.path.join(broken, "results.json"))
  rc, out = _main(broken, data_dir)
  assert rc == 0, out[-3000:]
  # The last complete checkpoint, with no word of the half-written one.
  assert f"resumed from the checkpoint at step {kill_in - 2}" in out
  assert "unreadable" not in out
  a, b = _exported_params(full), _exported_params(broken)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_sigterm_saves_and_a_corrupted_newest_is_skipped(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  proc = _main(workdir, data_dir, "--config.num_train_steps=400",
               "--config.export=false", wait=False)
  # Wait until training is under way, then preempt.
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, "".join(lines) + out
  m = re.search(r"preempted: checkpoint saved at step (\d+)", out)
  assert m, out[-3000:]
  stopped = int(m.group(1))
  saved = checkpoints.Checkpointer(ckpt_dir).all_steps()
  assert 3 <= stopped < 400 and saved[-1] == stopped and 2 in saved
  # The preemption checkpoint is complete: state and input position.
  config = test_train.tiny_config(data_dir)
  fns = train.make_train_step(config, train.make_mesh(config), 8000)
  step, state, data = checkpoints.Checkpointer(ckpt_dir).restore_latest(
      fns.abstract_state)
  assert step == int(state["step"]) == data["step"] == stopped

  # Corrupt every file of its train state: the run resumes from the one
  # before, with a warning, and completes.
  _corrupt(os.path.join(ckpt_dir, str(stopped)))
  before = max(s for s in saved if s < stopped)
  rc, out = _main(workdir, data_dir, f"--config.num_train_steps={stopped + 2}",
                  "--config.export=false")
  assert rc == 0, out[-3000:]
  assert f"checkpoint at step {stopped} in" in out and "is unreadable" in out
  assert f"resumed from the checkpoint at step {before}" in out
  assert re.search(rf"^step {stopped + 2}/{stopped + 2}  loss", out, re.M)
