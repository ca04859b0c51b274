"""The job's command line: one-line errors before compiling, bad runs."""

import os
import re

import jax
import numpy as np
import pytest

from bert_jax import checkpoints
from bert_jax import train
from tests import test_train
from tests.test_train import _main


@pytest.mark.parametrize("override, message", [
    ("--config.train_batch_size=12", "config.train_batch_size=12 is not "
     "divisible by the data-parallel size 8"),
    ("--config.max_seq_length=1024", "config.max_seq_length=1024 is longer "
     "than the position table"),
    ("--config.data.data_dir=/nonexistent", "config.data.input_file="),
    ("--config.nonsense=1", "nonsense"),
    ("--config.train_batch_size=big", "train_batch_size"),
])
def test_bad_config_fails_before_compiling(override, message, tmp_path,
                                           data_dir):
  extra = [override]
  if "data_dir" in override:
    extra.append("--config.data.input_file=/nonexistent/*.txt")
  rc, out = _main(str(tmp_path / "w"), data_dir, *extra)
  assert rc != 0
  assert message in out, out[-2000:]
  assert "Traceback" not in out
  assert "step 1/" not in out


def test_unwritable_workdir(tmp_path, data_dir):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  rc, out = _main(str(blocker / "w"), data_dir)
  assert rc != 0 and "is not writable" in out and "Traceback" not in out


@pytest.mark.slow
def test_non_finite_loss_stops_with_last_good_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  common = ("--config.num_train_steps=6", "--config.export=false",
            "--config.save_checkpoints_steps=1000")
  rc, out = _main(workdir, data_dir, "--config.learning_rate=1e30",
                  "--config.optimizer.clip_norm=0.0", *common)
  assert rc != 0
  assert "Traceback" not in out
  m = re.search(r"non-finite loss at step (\d+) \((.+)\); the checkpoint at "
                r"step (\d+)", out)
  assert m and m.group(1) == m.group(3), out[-2000:]
  # It names the first non-finite tensor: with parameters blown up to
  # ~1e30 by the step before, every input is finite and the loss is not.
  assert m.group(2) == "the loss is not finite (its inputs are)", m.group(2)
  bad = int(m.group(1))
  assert 0 < bad < 6
  saved = checkpoints.Checkpointer(os.path.join(workdir,
                                                "checkpoints")).all_steps()
  assert saved == [bad]  # the last good state, and nothing after it
  # Every saved number is finite (the step that overflowed left no trace).
  config = test_train.tiny_config(data_dir)
  fns = train.make_train_step(config, train.make_mesh(config), 8000)
  step, state, data = checkpoints.Checkpointer(
      os.path.join(workdir, "checkpoints")).restore_latest(fns.abstract_state)
  assert step == bad == int(state["step"]) and data["step"] == bad
  for leaf in jax.tree.leaves(state["params"]) + jax.tree.leaves(
      state["opt_state"]):
    assert np.all(np.isfinite(leaf))
