"""Pre-flight checks of a job, and the order of saving and evaluating.

(The batch, position-table, data and unwritable-local-workdir checks run
through the command line in tests/test_main.py.)
"""

import os

import jax
import numpy as np
import pytest

from bert_jax import checkpoints
from bert_jax import storage
from bert_jax import train
from bert_jax.tasks import pretraining
from tests import test_train


@pytest.mark.parametrize("ici, dcn, message", [
    ((3, 1, 1), (1, 1, 1), "has 3 devices, but 8 are available"),
    ((-1, 3, 1), (1, 1, 1), "8 devices are not divisible by 3"),
    ((-1, 1, 1), (3, 1, 1), "8 devices do not split into 3 slices"),
])
def test_a_mesh_that_does_not_divide_the_devices_is_one_config_error(
    ici, dcn, message):
  config = test_train.tiny_config(**{"mesh.ici_shape": ici,
                                     "mesh.dcn_shape": dcn})
  with pytest.raises(train.ConfigError) as e:
    train.make_mesh(config)
  assert str(e.value).startswith(f"config.mesh.ici_shape={ici}, "
                                 f"config.mesh.dcn_shape={dcn}: ")
  assert message in str(e.value)


def test_batch_must_divide_the_data_parallel_size(data_dir, tmp_path):
  mesh = train.make_mesh(test_train.tiny_config(
      **{"mesh.ici_shape": (4, 2, 1)}))  # data-parallel size 8 = 4 x 2
  config = test_train.tiny_config(data_dir, eval_batch_size=12)
  with pytest.raises(train.ConfigError,
                     match=r"config.eval_batch_size=12 is not divisible by "
                     r"the data-parallel size 8"):
    train.validate(config, str(tmp_path), mesh)


def test_an_unwritable_gcs_workdir_is_one_config_error(gcs, data_dir):
  config = test_train.tiny_config(data_dir)
  mesh = train.make_mesh(config)
  with pytest.raises(train.ConfigError,
                     match=r"--workdir=gs://no-such-bucket/run is not "
                     "writable"):
    train.validate(config, "gs://no-such-bucket/run", mesh)
  train.validate(config, f"gs://{gcs.bucket}/writable", mesh)  # no error
  assert not storage.exists(f"gs://{gcs.bucket}/writable/.write_probe_0")


class _EvalFails(Exception):
  pass


def test_a_step_that_saves_and_evaluates_saves_first(data_dir, tmp_path,
                                                     monkeypatch):
  """An evaluation that fails at a save step finds the checkpoint there."""
  seen = []

  def evaluate(self, run_eval, step):
    del self, run_eval
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    seen.append((step, ckpt.all_steps()))
    ckpt.close()
    raise _EvalFails(step)

  monkeypatch.setattr(pretraining.PretrainingTask, "evaluate", evaluate)
  workdir = str(tmp_path / "w")
  config = test_train.tiny_config(
      data_dir, num_train_steps=8, eval_every_steps=4,
      save_checkpoints_steps=4, export=False)
  with pytest.raises(_EvalFails):
    train.train_and_evaluate(config, workdir)
  assert seen == [(4, [4])]  # committed (listed) before evaluation began
  fns = train.make_train_step(config, train.make_mesh(config), 8000)
  step, state, _ = checkpoints.Checkpointer(
      os.path.join(workdir, "checkpoints")).restore_latest(fns.abstract_state)
  assert step == int(state["step"]) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(
      jax.device_get(state["params"])))
