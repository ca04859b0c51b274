"""A real two-process pre-training (jax.distributed, CPU, 127.0.0.1)."""

import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import pretrained
from tests import test_train

ROOT = test_train.ROOT


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _args(workdir, data_dir):
  return [sys.executable, "-m", "bert_jax.main",
          "--config=configs/pretrain.py:demo", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          f"--config.data.vocab_file={test_train.VOCAB}",
          "--config.train_batch_size=16", "--config.eval_batch_size=16",
          "--config.phase2_train_batch_size=16",
          "--config.max_seq_length=32", "--config.max_predictions_per_seq=5",
          "--config.num_train_steps=6", "--config.num_warmup_steps=2",
          "--config.log_every_steps=1", "--config.save_checkpoints_steps=3",
          "--config.num_eval_steps=2", "--config.mesh.ici_shape=(4,2,1)"]


def _losses(out):
  return [float(x) for x in re.findall(r"^step \d+/\d+  loss (\S+)", out,
                                       re.M)]


@pytest.mark.slow
def test_two_processes_equal_one(data_dir, tmp_path):
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  env = dict(os.environ)
  res = subprocess.run(_args(single_dir, data_dir), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  single = _losses(res.stdout)
  assert len(single) == 6

  port = _free_port()
  env4 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen(
      _args(multi_dir, data_dir) + [
          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
          f"--process_id={i}"], cwd=ROOT, env=env4, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  multi = _losses(outs[0])
  assert _losses(outs[1]) == []  # only process 0 logs
  np.testing.assert_allclose(multi, single, rtol=1e-4)
  a = pretrained._flatten(pretrained.load_bert_jax(
      os.path.join(single_dir, "export", "bert_jax"))[1])
  b = pretrained._flatten(pretrained.load_bert_jax(
      os.path.join(multi_dir, "export", "bert_jax"))[1])
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6,
                               err_msg=k)
