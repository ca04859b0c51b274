"""The trainer: the sharded step, accumulation, objectives, two phases.

Also the shared helpers for the tests that run the job as a subprocess
(test_checkpoints, test_main, test_multihost).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bert_jax import pretrained
from bert_jax import train
from bert_jax.tasks import pretraining
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
  c.update_from_flattened_dict(overrides)
  c.lock()
  return c


def test_make_train_step_lowers_against_abstract_inputs():
  """What bert_jax.plan does: no data, no arrays, just shapes + shardings."""
  config = tiny_config(**{"mesh.ici_shape": (2, 2, 2),
                          "optimizer.grad_accum_steps": 2})
  mesh = train.make_mesh(config)
  fns = train.make_train_step(config, mesh)
  batch = fns.abstract_batch(config, 32, 5, config.train_batch_size)
  assert batch["input_ids"].shape == (16, 32)
  with train.sharding.activation_rules(mesh, train.rules_of(config)):
    lowered = fns.train_step.lower(fns.abstract_state, batch)
  out_state, metrics = lowered.out_info
  assert jax.tree.structure(out_state) == jax.tree.structure(
      fns.abstract_state)
  assert {"loss", "grad_norm", "learning_rate"} <= set(metrics)
  # Donated state: XLA may reuse its buffers for the new state.
  assert "tf.aliasing_output" in lowered.as_text() or (
      "jax.buffer_donor" in lowered.as_text())
  # Parameters follow the logical rules (embed -> fsdp here).
  emb = fns.abstract_state["params"]["bert"]["embeddings"]
  assert any("fsdp" in str(s.spec) for s in jax.tree.leaves(
      jax.tree.map(lambda x: x.sharding, emb)))


def test_model_flops_are_6n_per_token_plus_attention():
  """MFU's numerator against the model's own parameter counts."""
  cfg = train.model_lib.BertConfig.from_preset("base")
  sizes = {k: int(np.prod(v)) for k, v in pretrained._flatten(
      pretrained.param_shapes(cfg)).items()}
  kernels = lambda prefix: sum(n for k, n in sizes.items()
                               if k.startswith(prefix) and k.endswith("kernel"))
  batch, seq, pred = 256, 128, 20
  tokens, h, layers = batch * seq, cfg.hidden_size, cfg.num_layers
  # 2 FLOPs per weight per row forward, twice that backward: 6 N per row.
  expected = 6 * (
      tokens * kernels("bert/encoder")
      # the tied decoder: the true vocabulary's rows (model FLOPs do not
      # count the padding rows of the table, see model.VOCAB_PAD_MULTIPLE)
      + batch * pred * (kernels("mlm/") + cfg.vocab_size * h)
      + batch * (kernels("bert/pooler") + kernels("nsp/")))
  expected += 3 * tokens * layers * 2 * (2 * seq * h)  # QK^T and AV
  got = train.model_flops_per_step(cfg, batch, seq, pred, "mlm_nsp")
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  assert train.peak_flops("TPU v3") == 61.5e12 and train.peak_flops("cpu") is None


def _run_steps(config, mesh, data_dir, n):
  fns = train.make_train_step(config, mesh, vocab_size=8000)
  it = pretraining.make_iterator(config, data_dir, "train",
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


def _main(workdir, data_dir, *extra, wait=True, env=None):
  """The job as a subprocess; `env` arms a fault (tests/fault_hooks.py)."""
  entry = "tests.fault_hooks" if env else "bert_jax.main"
  args = [sys.executable, "-m", entry,
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
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, **env) if env else None)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def _exported_params(workdir):
  _, params, _ = pretrained.load_bert_jax(os.path.join(workdir, "export",
                                                    "bert_jax"))
  return pretrained._flatten(params)


def _wait_for(proc, predicate, timeout=240):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


@pytest.mark.parametrize("variant", ["no_nsp", "ltr"])
def test_ablation_objectives_train(variant, tmp_path):
  """No-NSP and LTR: data of their own objective, a falling loss."""
  base = pretrain.get_config(variant)
  config = tiny_config(str(tmp_path / "data"), objective=base.objective,
                       learning_rate=5e-3, num_train_steps=100)
  pretraining.prepare_data(config, str(tmp_path), 32, 5, str(tmp_path / "data"))
  manifest = json.load(open(tmp_path / "data" / "manifest.json"))
  assert manifest["options"]["objective"] == base.objective
  mesh = train.sharding.create_mesh((2, 1, 1), devices=jax.devices()[:2])
  fns = train.make_train_step(config, mesh, vocab_size=8000)
  assert ("nsp" in fns.abstract_state["params"]) is False
  it = pretraining.make_iterator(config, str(tmp_path / "data"), "train", 16, 32,
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


def _copy_data(src, dst, edit):
  shutil.copytree(src, dst)
  path = os.path.join(dst, "manifest.json")
  with open(path) as f:
    manifest = json.load(f)
  edit(manifest, dst)
  with open(path, "w") as f:
    json.dump(manifest, f)
  return str(dst)


def test_preflight_rejects_data_the_run_cannot_use(data_dir, tmp_path):
  """Before the first step: a missing held-out split, data of another
  length, a vocabulary that is not on this machine; each one line."""
  from bert_jax.tasks import base  # pylint: disable=g-import-not-at-top

  def prepare(data, **overrides):
    task = pretraining.PretrainingTask(
        tiny_config(data, **overrides))
    task.prepare(str(tmp_path / "w"))
    return task

  def no_eval(manifest, d):
    manifest.pop("eval")
    for name in os.listdir(d):
      if name.startswith("eval"):
        os.remove(os.path.join(d, name))

  data = _copy_data(data_dir, tmp_path / "no_eval", no_eval)
  with pytest.raises(base.ConfigError, match=r"no held-out split.*--eval_fraction"):
    prepare(data)
  with pytest.raises(base.ConfigError,
                     match="max_seq_length: data 32, run 64"):
    prepare(data_dir, max_seq_length=64)

  def moved_vocab(manifest, d):
    del d
    manifest["vocab"]["file"] = "/elsewhere/corpus-wordpiece-8k.txt"

  data = _copy_data(data_dir, tmp_path / "moved", moved_vocab)
  # The same file under config.data.vocab_file (checked by its sha256).
  assert prepare(data, **{"data.vocab_file": VOCAB}).vocab_file == VOCAB
  other = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
  with pytest.raises(base.ConfigError, match="not on this machine"):
    prepare(data, **{"data.vocab_file": other})
