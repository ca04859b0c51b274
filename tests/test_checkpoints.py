"""Checkpoints: round trip, keep-N, corrupted newest skipped, preemption."""

import json
import logging
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
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
  assert "checkpoint at step 3" in caplog.text
  assert "is unreadable" in caplog.text
  ckpt.close()


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


def test_killed_and_resumed_run_is_bitwise_identical(data_dir, tmp_path):
  full, broken = str(tmp_path / "full"), str(tmp_path / "broken")
  rc, out = _main(full, data_dir)
  assert rc == 0, out[-3000:]
  results = json.load(open(os.path.join(full, "results.json")))
  assert results["steps"] == 12
  assert 0 <= results["masked_lm_accuracy"] <= 1
  assert results["next_sentence_accuracy"] > 0
  # A real kill (SIGKILL, no clean-up) after a random checkpoint landed.
  kill_after = int(np.random.default_rng().choice([2, 4, 6, 8]))
  proc = _main(broken, data_dir, wait=False)
  ckpt_dir = os.path.join(broken, "checkpoints")
  _wait_for(proc, lambda: os.path.isdir(ckpt_dir) and any(
      d.isdigit() and int(d) >= kill_after for d in os.listdir(ckpt_dir)))
  proc.kill()
  proc.wait()
  assert not os.path.exists(os.path.join(broken, "results.json"))
  rc, out = _main(broken, data_dir)
  assert rc == 0, out[-3000:]
  assert "resumed from the checkpoint at step" in out
  a, b = _exported_params(full), _exported_params(broken)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


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
