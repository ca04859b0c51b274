"""The trainer: schedule, decay mask, optimizer, steps, resume, preemption."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import checkpoints
from bert_jax import convert
from bert_jax import optimizer as optimizer_lib
from bert_jax import train
from configs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "data/vocab/corpus-wordpiece-8k.txt")


def tiny_config(data_dir="", **overrides):
  c = pretrain.get_config("demo")
  c.unlock()
  c.train_batch_size = 16
  c.eval_batch_size = 16
  c.phase2_train_batch_size = 16
  c.max_seq_length = 32
  c.max_predictions_per_seq = 5
  c.num_train_steps = 12
  c.num_warmup_steps = 2
  c.log_every_steps = 3
  c.eval_every_steps = 1000
  c.save_checkpoints_steps = 4
  c.num_eval_steps = 2
  c.data.data_dir = data_dir
  c.data.input_file = os.path.join(ROOT, "data/corpus/botchan.txt.gz")
  c.data.vocab_file = VOCAB
  c.data.dupe_factor = 1
  c.data.eval_fraction = 0.2
  c.data.num_workers = 1
  c.data.num_shards = 2
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  c.lock()
  return c


def test_schedule_equals_tf1_formula():
  peak, warmup, total = 1e-4, 100, 1000
  schedule = optimizer_lib.learning_rate_schedule(peak, warmup, total)
  for step in (0, 1, 50, 99, 100, 101, 500, 999, 1000):
    expected = (peak * step / warmup if step < warmup
                else peak * (1 - step / total))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5,
                               atol=1e-12)


def test_decay_mask_covers_exactly_kernels_and_embeddings():
  cfg = train.model_config(tiny_config())
  params = convert.init_params(cfg)
  mask = optimizer_lib.decay_mask(params)
  flat = convert._flatten(params)
  flat_mask = convert._flatten(mask)
  for path in flat:
    parts = path.split("/")
    no_decay = (parts[-1] in ("bias", "output_bias")
                or any("layer_norm" in p for p in parts))
    assert flat_mask[path] == (not no_decay), path
  assert sum(flat_mask.values()) == len([p for p in flat if p.endswith(
      ("kernel", "embedding"))])


def test_tf1_adam_without_bias_correction_matches_hand_written():
  lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-6, 0.01
  tx = optimizer_lib.create_optimizer(
      "adamw_tf1", lambda _: lr, b1=b1, b2=b2, eps=eps, weight_decay=wd,
      clip_norm=0.0)
  params = {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])}
  state = tx.init(params)
  p = {k: np.array(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  rng = np.random.default_rng(0)
  for _ in range(3):
    g = {k: rng.normal(size=x.shape) for k, x in p.items()}
    updates, state = tx.update({k: jnp.asarray(x, jnp.float32)
                                for k, x in g.items()}, state, params)
    params = optax.apply_updates(params, updates)
    for k in p:  # TF1 AdamWeightDecayOptimizer.apply_gradients
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      update = m[k] / (np.sqrt(v[k]) + eps)
      if k == "kernel":
        update += wd * p[k]
      p[k] = p[k] - lr * update
  for k in p:
    np.testing.assert_allclose(params[k], p[k], rtol=1e-5)


def _run_steps(config, mesh, data_dir, n):
  fns = train.make_train_step(config, mesh, vocab_size=8000)
  it = train.make_iterator(config, data_dir, "train",
                           config.train_batch_size, 32, 5,
                           fns.batch_sharding)
  state = fns.init()
  losses = []
  for _ in range(n):
    state, metrics = fns.train_step(state, next(it))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


def test_loss_falls_and_sharded_equals_unsharded(data_dir):
  config = tiny_config(data_dir, learning_rate=5e-3, num_train_steps=100)
  sharded, losses = _run_steps(config, train.make_mesh(tiny_config(
      data_dir, **{"mesh.ici_shape": (2, 2, 2)})), data_dir, 8)
  assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
  single, losses1 = _run_steps(
      config, train.sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1]),
      data_dir, 8)
  np.testing.assert_allclose(losses, losses1, rtol=2e-5)
  for a, b in zip(jax.tree.leaves(sharded["params"]),
                  jax.tree.leaves(single["params"])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_gradient_accumulation_equals_full_batch(data_dir):
  base = tiny_config(data_dir)
  accum = tiny_config(data_dir, **{"optimizer.grad_accum_steps": 2})
  mesh = train.sharding.create_mesh((2, 1, 1), devices=jax.devices()[:2])
  s1, l1 = _run_steps(base, mesh, data_dir, 2)
  s2, l2 = _run_steps(accum, mesh, data_dir, 2)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _main(workdir, data_dir, *extra, wait=True):
  args = [sys.executable, "-m", "bert_jax.main",
          "--config=configs/pretrain.py:demo", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          f"--config.data.vocab_file={VOCAB}",
          "--config.train_batch_size=16", "--config.eval_batch_size=16",
          "--config.phase2_train_batch_size=16",
          "--config.max_seq_length=32", "--config.max_predictions_per_seq=5",
          "--config.num_train_steps=12", "--config.num_warmup_steps=2",
          "--config.log_every_steps=1", "--config.save_checkpoints_steps=2",
          "--config.num_eval_steps=2", *extra]
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def _exported_params(workdir):
  _, params, _ = convert.load_bert_jax(os.path.join(workdir, "export",
                                                    "bert_jax"))
  return convert._flatten(params)


def _wait_for(proc, predicate, timeout=240):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


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


def test_sigterm_saves_and_resume_completes(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  proc = _main(workdir, data_dir, "--config.num_train_steps=400",
               "--config.save_checkpoints_steps=1000", wait=False)
  # Wait until training is under way, then preempt.
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, "".join(lines) + out
  assert "preempted: checkpoint saved at step" in out
  saved = checkpoints.Checkpointer(os.path.join(workdir,
                                                "checkpoints")).all_steps()
  assert saved and 3 <= saved[-1] < 400
  rc, out = _main(workdir, data_dir, "--config.num_train_steps=" +
                  str(saved[-1] + 4))
  assert rc == 0, out[-3000:]
  assert f"resumed from the checkpoint at step {saved[-1]}" in out


def test_corrupted_newest_checkpoint_is_skipped(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  rc, out = _main(workdir, data_dir, "--config.num_train_steps=4",
                  "--config.export=false")
  assert rc == 0, out[-3000:]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert steps[-2:] == [2, 4]
  # Corrupt every file of the newest checkpoint's train state.
  for root, _, files in os.walk(os.path.join(ckpt_dir, "4", "state")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  rc, out = _main(workdir, data_dir, "--config.num_train_steps=6",
                  "--config.export=false")
  assert rc == 0, out[-3000:]
  assert "resumed from the checkpoint at step 2" in out
  assert "is unreadable" in out


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


def test_non_finite_loss_stops_with_last_good_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  rc, out = _main(workdir, data_dir, "--config.learning_rate=1e30",
                  "--config.optimizer.clip_norm=0.0",
                  "--config.save_checkpoints_steps=1000")
  assert rc != 0
  assert "non-finite loss at step" in out and "Traceback" not in out
  saved = checkpoints.Checkpointer(os.path.join(workdir,
                                                "checkpoints")).all_steps()
  assert saved  # the last good state was written


@pytest.mark.parametrize("variant", ["no_nsp", "ltr"])
def test_ablation_objectives_train(variant, tmp_path):
  """No-NSP and LTR: data of their own objective, a falling loss."""
  base = pretrain.get_config(variant)
  config = tiny_config(str(tmp_path / "data"), objective=base.objective,
                       learning_rate=5e-3, num_train_steps=100)
  train.prepare_data(config, str(tmp_path), 32, 5, str(tmp_path / "data"))
  manifest = json.load(open(tmp_path / "data" / "manifest.json"))
  assert manifest["options"]["objective"] == base.objective
  mesh = train.sharding.create_mesh((2, 1, 1), devices=jax.devices()[:2])
  fns = train.make_train_step(config, mesh, vocab_size=8000)
  assert ("nsp" in fns.abstract_state["params"]) is False
  it = train.make_iterator(config, str(tmp_path / "data"), "train", 16, 32,
                           5, fns.batch_sharding)
  state = fns.init()
  losses = []
  for _ in range(8):
    state, metrics = fns.train_step(state, next(it))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
  if variant == "ltr":
    assert "lm_loss_sum" in metrics and fns.model_config.attention == "causal"
  else:
    assert "nsp_loss_sum" not in metrics


def test_two_phase_run_switches_sequence_length(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  rc, out = _main(workdir, data_dir, "--config.num_train_steps=6",
                  "--config.phase2_start_step=3",
                  "--config.phase2_max_seq_length=64",
                  "--config.phase2_max_predictions_per_seq=10",
                  f"--config.data.input_file={ROOT}/data/corpus/botchan.txt.gz",
                  "--config.data.dupe_factor=1", "--config.data.num_workers=1",
                  "--config.data.eval_fraction=0.2")
  assert rc == 0, out[-3000:]
  manifest = json.load(open(os.path.join(workdir, "data_64",
                                         "manifest.json")))
  assert manifest["options"]["max_seq_length"] == 64
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["steps"] == 6
  assert re.search(r"^step 3/6", out, re.M) and re.search(r"^step 4/6", out,
                                                          re.M)
