"""Ahead-of-time compilation of the real train step for TPU v3 slices."""

import json
import math
import os
import subprocess
import sys

import pytest

from bert_jax import plan
from bert_jax import pretrained
from bert_jax.tasks import pretraining
from configs import pretrain

pytest.importorskip("libtpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(batch=64, seq=64):
  c = pretrain.get_config("demo")
  with c.unlocked():
    c.train_batch_size = batch
    c.max_seq_length = seq
    c.model.dtype = "bfloat16"
  return c


def test_topology_sizes():
  for name, cores in (("v3-8", 8), ("v3-32", 32), ("v3-128", 128),
                      ("v3-256", 256)):
    devices = plan.topology_devices(name)
    assert len(devices) == cores and devices[0].device_kind == "TPU v3"
  with pytest.raises(ValueError, match="expected one of"):
    plan.topology_devices("v4-8")


@pytest.mark.slow
def test_plan_reports_memory_and_flops_against_formulas():
  config = _tiny()
  result = plan.plan(config, "v3-8", search=False, log=lambda *_: None)
  assert result["topology"] == "v3-8" and result["fits"] is True
  assert result["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
  # Lower bound: data parallelism replicates params and both Adam moments
  # (float32) on every core.
  cfg = pretraining.model_config(config, vocab_size=8000)
  n = sum(v.size for v in pretrained._flatten(pretrained.init_params(cfg)).values())
  assert result["per_core_bytes"] >= 3 * 4 * n
  assert result["per_core_bytes"] < 16 * 2**30
  # Training FLOPs ~ 6 x parameters x tokens (+ attention, head): the
  # formula reported must be in that neighbourhood.
  tokens = config.train_batch_size * config.max_seq_length
  body = n - 8000 * 128 - 512 * 128  # without the embedding tables
  assert 6 * body * tokens * 0.5 < result["flops_per_step"] < (
      6 * n * tokens * 3)
  assert result["xla_cost_flops_per_step"] > 0
  assert result["compile_seconds"] > 0
  # The step-time floor: finite, at least the FLOPs roofline of the model
  # FLOPs on 8 cores of 123/2 TFLOP/s, and the MFU it allows at most 1.
  # The tiny config has no loops (unrolled, one micro-batch): XLA's cost of
  # the compiled step is complete and no second compile is needed.
  assert result["cost_program"] == "as compiled"
  step = result["step_seconds"]
  assert 0 < step < 1 and math.isfinite(step)
  assert step >= result["flops_per_step"] / (8 * 61.5e12)
  assert result["step_bound"] in result["step_bounds"]
  assert step == max(result["step_bounds"].values())
  assert 0 < result["mfu_ceiling"] <= 1
  assert result["train_days"] == pytest.approx(
      config.num_train_steps * step / 86400)


@pytest.mark.slow
def test_nothing_fits_is_a_clear_error(tmp_path):
  env = dict(os.environ)
  res = subprocess.run(
      [sys.executable, "-m", "bert_jax.plan",
       "--config=configs/pretrain.py:demo", "--topology=v3-8", "--json",
       "--hbm_gib=0.001", "--config.train_batch_size=8",
       "--config.model.dtype=bfloat16"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode != 0
  assert "nothing tried fits in 0 GiB per core on v3-8" in res.stderr
  last = json.loads(res.stdout.strip().splitlines()[-1])
  assert set(last) >= {"topology", "mesh", "per_core_bytes",
                       "hbm_bytes_per_core", "fits", "flops_per_step",
                       "compile_seconds"}
  assert last["fits"] is False


def test_search_tries_candidates_in_order():
  cands = plan.candidates(8, 4, 64)
  assert cands[0] == ((8, 1, 1), 1)
  assert cands[1] == ((1, 8, 1), 1) and ((1, 4, 2), 1) in cands
  assert ((8, 1, 1), 2) in cands  # more micro-batches after every mesh
  assert all(64 % (micro * d * f) == 0 for (d, f, _), micro in cands)
  assert all(4 % t == 0 for (_, _, t), _ in cands)


# -- time and cost, by hand ----------------------------------------------------

FAKE_COST = {"flops": 1e12, "bytes_accessed": 9e9, "optimal_seconds": 0.015}


def test_step_time_takes_the_largest_bound():
  # 8 cores = 4 v3 chips. FLOPs: max(4e12 / 8, 1e12) / 61.5e12 per core;
  # HBM: 9e9 bytes / 450 GB/s per core = 0.02 s; XLA: 0.015 s.
  t = plan.step_time(FAKE_COST, model_flops_per_step=4e12, num_cores=8)
  assert t["step_bounds"] == pytest.approx({
      "flops_roofline": 1e12 / 61.5e12, "hbm_roofline": 0.02,
      "xla_optimal_seconds": 0.015})
  assert t["step_bound"] == "hbm_roofline"
  assert t["step_seconds"] == pytest.approx(0.02)
  # 4e12 model FLOPs in 0.02 s on 4 chips of 123 TFLOP/s.
  assert t["mfu_ceiling"] == pytest.approx(4e12 / (0.02 * 4 * 123e12))
  # Without XLA's estimate (a CPU or GPU backend) the rooflines remain; the
  # model FLOPs win when XLA counted fewer.
  t = plan.step_time({"flops": 1e12, "bytes_accessed": 0.0,
                      "optimal_seconds": None}, 16e12, 8)
  assert set(t["step_bounds"]) == {"flops_roofline"}
  assert t["step_seconds"] == pytest.approx(2e12 / 61.5e12)
  assert t["mfu_ceiling"] == pytest.approx(1.0)


def test_training_time_days_and_cost():
  # 900k steps of 0.1 s then 100k of 0.4 s = 130,000 s on 16 chips.
  t = plan.training_time([(900_000, 0.1), (100_000, 0.4)], num_chips=16,
                         price_per_chip_hour=2.0,
                         spot_price_per_chip_hour=0.6)
  assert t["train_steps"] == 1_000_000
  assert t["train_days"] == pytest.approx(130_000 / 86_400)
  assert t["chip_hours"] == pytest.approx(130_000 / 3600 * 16)
  assert t["train_cost"] == pytest.approx({"on_demand": 1155.5556,
                                           "spot": 346.6667})
  assert "train_cost" not in plan.training_time([(10, 1.0)], 4)


def test_recipe_plans_both_phases_on_the_last_phases_mesh(monkeypatch):
  calls = []

  def fake_plan(config, topology, search, **kw):
    calls.append((config.max_seq_length, config.max_predictions_per_seq,
                  config.train_batch_size, search,
                  tuple(config.mesh.ici_shape),
                  config.optimizer.grad_accum_steps))
    seq512 = config.max_seq_length == 512
    return {"topology": topology, "num_devices": 32, "num_chips": 16,
            "mesh": {"data": 16, "fsdp": 2, "tensor": 1},
            "micro_batches": 2, "hbm_bytes_per_core": 16 * 2**30,
            "model": "base", "fits": True,
            "per_core_bytes": (9 if seq512 else 3) * 2**30,
            "flops_per_step": 8e13 if seq512 else 2e13,
            "step_seconds": 0.4 if seq512 else 0.1,
            "step_bound": "xla_optimal_seconds"}

  monkeypatch.setattr(plan, "plan", fake_plan)
  r = plan.plan_recipe(pretrain.get_config("base"), "v3-32", search=True,
                       log=lambda *_: None, price_per_chip_hour=2.0)
  # Phase 2 (seq 512, 80 predictions) searches; phase 1 reuses its choice.
  assert calls == [(512, 80, 256, True, (-1, 1, 1), 1),
                   (128, 20, 256, False, (16, 2, 1), 2)]
  assert [p["steps"] for p in r["phases"]] == [900_000, 100_000]
  assert r["per_core_bytes"] == 9 * 2**30 and r["fits"] is True
  assert r["train_days"] == pytest.approx(130_000 / 86_400)
  assert r["train_cost"] == pytest.approx({"on_demand": 1155.5556})
  assert r["step_seconds"] == pytest.approx(0.13)
  flops = 900_000 * 2e13 + 100_000 * 8e13
  assert r["mfu_ceiling"] == pytest.approx(flops / (130_000 * 16 * 123e12))
