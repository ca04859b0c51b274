"""Ahead-of-time compilation of the real train step for TPU v3 slices."""

import json
import os
import subprocess
import sys

import pytest

from bert_jax import plan
from bert_jax import pretrained
from bert_jax import train
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


def test_plan_reports_memory_and_flops_against_formulas():
  config = _tiny()
  result = plan.plan(config, "v3-8", search=False, log=lambda *_: None)
  assert result["topology"] == "v3-8" and result["fits"] is True
  assert result["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
  # Lower bound: data parallelism replicates params and both Adam moments
  # (float32) on every core.
  cfg = train.model_config(config, vocab_size=8000)
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


def test_nothing_fits_is_a_clear_error(tmp_path):
  env = dict(os.environ)
  res = subprocess.run(
      [sys.executable, "-m", "bert_jax.plan",
       "--config=configs/pretrain.py:demo", "--topology=v3-8", "--json",
       "--hbm_gib=0.001", "--config.train_batch_size=64",
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
