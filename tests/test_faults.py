"""Faults, injected: a workdir of another config, bad batches, where a
non-finite value first appears, a disk that fills during a save.

(The kill -9 inside an asynchronous checkpoint write, SIGTERM and corrupt
checkpoints are in test_checkpoints; the non-finite stop of a whole run in
test_main; malformed inputs in test_fuzz.) RELIABILITY.md lists them all.
"""

import contextlib
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoints
from bert_jax import numerics
from bert_jax import train
from bert_jax.tasks import pretraining
from tests.test_train import VOCAB
from tests.test_train import tiny_config


def test_workdir_of_another_config_fails_before_the_first_step(data_dir,
                                                               tmp_path):
  """A checkpoint written under another model size and batch size: one
  ConfigError naming the keys, before anything compiles and before the
  workdir's files are rewritten; the checkpoint stays."""
  workdir = str(tmp_path / "w")
  ours = tiny_config(data_dir)
  fns = train.make_train_step(ours, train.make_mesh(ours), 8000)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt.save(4, {"step": jnp.int32(4)}, {"step": 4}, {},
            identity=train.run_identity(ours, fns, VOCAB))
  ckpt.close()
  model_file = os.path.join(workdir, "bert_config.json")
  with open(model_file, "w") as f:
    f.write("the model that wrote step 4")

  other = tiny_config(data_dir, train_batch_size=32,
                      **{"model.preset": "mini"})
  with pytest.raises(train.ConfigError) as e:
    train.train_and_evaluate(other, workdir)
  msg = str(e.value)
  assert "\n" not in msg and "checkpoint at step 4" in msg
  assert "model.hidden_size: checkpoint 128, run 256" in msg
  assert "model.num_layers: checkpoint 2, run 4" in msg
  assert "batch.train_batch_size: checkpoint 16, run 32" in msg
  with open(model_file) as f:
    assert f.read() == "the model that wrote step 4"
  assert checkpoints.Checkpointer(os.path.join(
      workdir, "checkpoints")).all_steps() == [4]


def _poisoned(batch):
  """The batch with one NaN weight: its masked-LM loss is NaN."""
  w = np.array(batch["masked_lm_weights"])
  w[0, 0] = np.nan
  return dict(batch, masked_lm_weights=jax.device_put(
      w, batch["masked_lm_weights"].sharding))


def test_bad_batches_are_skipped_up_to_the_budget(data_dir):
  config = tiny_config(data_dir, max_bad_batches=1)
  mesh = train.sharding.create_mesh((2, 1, 1), devices=jax.devices()[:2])
  fns = train.make_train_step(config, mesh, vocab_size=8000)
  it = pretraining.make_iterator(config, data_dir, "train", 16, 32, 5,
                                 fns.batch_sharding)
  state = fns.init()
  host = lambda s: jax.device_get(s)
  state, m = fns.train_step(state, next(it))
  before = host(state)
  # The first bad batch: skipped (counted as a step, nothing applied).
  state, m = fns.train_step(state, _poisoned(next(it)))
  after = host(state)
  assert int(m["skipped_step"]) == 1 and not after["bad"]
  assert int(after["step"]) == 2 and int(after["skipped"]) == 1
  for a, b in zip(jax.tree.leaves(before["params"]) + jax.tree.leaves(
      before["opt_state"]), jax.tree.leaves(after["params"])
                  + jax.tree.leaves(after["opt_state"])):
    np.testing.assert_array_equal(a, b)
  # Good batches still train.
  state, m = fns.train_step(state, next(it))
  good = host(state)
  assert int(good["step"]) == 3 and np.isfinite(float(m["loss"]))
  assert not np.array_equal(good["params"]["nsp"]["bias"],
                            after["params"]["nsp"]["bias"])
  # The second bad batch is over the budget: the state freezes at step 3.
  state, m = fns.train_step(state, _poisoned(next(it)))
  stopped = host(state)
  assert stopped["bad"] and int(stopped["step"]) == 3
  assert int(m["first_bad_step"]) == 3 and int(m["skipped_step"]) == -1
  np.testing.assert_array_equal(stopped["params"]["nsp"]["bias"],
                                good["params"]["nsp"]["bias"])
  # And what made it bad, found again on the host.
  where = numerics.first_non_finite(
      fns.loss_fn, {"params": stopped["params"],
                    "batch": _poisoned(next(it)), "step": np.int32(3)})
  assert where == "the input batch/masked_lm_weights is not finite"


def _saturating_loss(params, x):
  # 1 / (1 + exp(a x)) is finite however large a x is (exp overflows to
  # inf, 1 / inf = 0), but its gradient is -x exp / (1 + exp)^2 = inf / inf.
  z = params["a"] * x
  e = jnp.exp(z)
  return jnp.sum(1.0 / (1.0 + e)) + jnp.sum(params["b"] ** 2)


def test_first_non_finite_names_the_tensor_and_the_operation():
  params = {"a": jnp.float32(100.0), "b": jnp.ones(3)}
  x = jnp.array([0.1, 10.0])  # a x = 1000: exp overflows
  args = {"params": params, "x": x}
  assert np.isfinite(_saturating_loss(params, x))
  grads = jax.grad(_saturating_loss)(params, x)
  assert np.isnan(grads["a"]) and np.all(np.isfinite(grads["b"]))
  assert numerics.first_non_finite(_saturating_loss, args) == (
      "the gradient of params/a is not finite (the loss is)")
  where = numerics.first_non_finite(_saturating_loss, args, trace_ops=True)
  line = _saturating_loss.__code__.co_firstlineno + 4  # e = jnp.exp(z)
  assert where.startswith("the gradient of params/a (the loss is finite); "
                          "first non-finite value: exp at ")
  assert f"tests/test_faults.py:{line} (_saturating_loss)" in where
  # Finite everywhere: nothing to name.
  assert numerics.first_non_finite(
      _saturating_loss, {"params": params, "x": x / 1000}) is None
  # A non-finite input is named before anything runs.
  assert numerics.first_non_finite(
      _saturating_loss, {"params": dict(params, b=jnp.array(
          [1.0, jnp.inf, 1.0])), "x": x}) == (
              "the input params/b is not finite")


@contextlib.contextmanager
def _small_disk(path, size):
  """A real file system of `size` (tmpfs); skips where mounting is not
  allowed (not root)."""
  os.makedirs(path)
  try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                    path], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f"cannot mount a tmpfs here ({e})")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", path], check=False)


def test_disk_full_during_a_save(data_dir, tmp_path):
  """The workdir's disk fills in the second checkpoint (each is ~18 MB of
  params and Adam moments; the disk holds 30 MB): the run stops with one
  error naming the step and the intact one, which still restores, and no
  half-written step is listed."""
  config = tiny_config(data_dir, num_train_steps=4, save_checkpoints_steps=2,
                       log_every_steps=2, export=False)
  with _small_disk(str(tmp_path / "disk"), "30m") as workdir:
    with pytest.raises(checkpoints.CheckpointWriteError) as e:
      train.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "\n" not in msg
    assert "saving the checkpoint at step 4 in " in msg
    assert "No space left on device" in msg
    assert msg.endswith("the checkpoint at step 2 is intact")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    reader = checkpoints.Checkpointer(ckpt_dir)
    assert reader.all_steps() == [2]
    fns = train.make_train_step(config, train.make_mesh(config), 8000)
    step, state, data = reader.restore_latest(fns.abstract_state)
    assert step == 2 == int(state["step"]) == data["step"]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
    reader.close()
    assert not os.path.exists(os.path.join(workdir, "results.json"))
