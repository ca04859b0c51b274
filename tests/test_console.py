"""The console: each command line prints its own lines and nothing else.

Run as a new user runs them: a subprocess without the test suite's
environment (no JAX_PLATFORMS, no TF_CPP_MIN_LOG_LEVEL, no libtpu
settings), with libtpu installed (requirements-dev.txt) on a machine that
has no TPU. Also records which modules the process imported: the
pre-training path never imports TensorFlow.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests import minilm
from tests import test_train

ROOT = test_train.ROOT
# What the suite's conftest (or a user's shell) may set to hide the noise.
_SUITE_ENV = ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "XLA_FLAGS",
              "TPU_SKIP_MDS_QUERY", "TPU_WORKER_HOSTNAMES",
              "ALLOW_MULTIPLE_LIBTPU_LOAD", "TRANSFORMERS_VERBOSITY")
# Lines libraries print at start-up or log, and never bert_jax.
_NOISE = ("libtpu", "TPU", "oneDNN", "TF_ENABLE_ONEDNN_OPTS", "absl",
          "InitGoogle", "E0000", "W0000", "I0000", "Traceback", "Warning",
          "WARNING", "cuda", "CUDA")
# Runs a module as `python -m` would, then writes sys.modules to a file.
_WRAPPER = """import atexit, json, runpy, sys
out, module = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _run(tmp_path, module, *args):
  env = {k: v for k, v in os.environ.items() if k not in _SUITE_ENV}
  modules = tmp_path / f"{module}.modules.json"
  res = subprocess.run(
      [sys.executable, "-c", _WRAPPER, str(modules), module, *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  out = res.stdout + res.stderr
  assert res.returncode == 0, out[-3000:]
  return out, json.loads(modules.read_text())


def _assert_own_lines(out, *patterns):
  noise = [line for line in out.splitlines() if any(n in line
                                                    for n in _NOISE)]
  assert not noise, out[-3000:]
  for line in out.splitlines():
    assert any(re.match(p, line) for p in patterns), (line, out[-3000:])


def _no_tensorflow(modules):
  return not [m for m in modules if m.split(".")[0] == "tensorflow"]


def test_pretraining_prints_progress_and_results_only(tmp_path, data_dir):
  out, modules = _run(
      tmp_path, "bert_jax.main", "--config=configs/pretrain.py:demo",
      f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={data_dir}",
      f"--config.data.vocab_file={test_train.VOCAB}",
      "--config.train_batch_size=8", "--config.eval_batch_size=8",
      "--config.max_seq_length=32", "--config.max_predictions_per_seq=5",
      "--config.num_train_steps=2", "--config.num_warmup_steps=1",
      "--config.log_every_steps=1", "--config.save_checkpoints_steps=2",
      "--config.eval_every_steps=1", "--config.num_eval_steps=1")
  _assert_own_lines(out, r"step \d/2  loss ", r"eval at step 1: ",
                    r"results: variant demo ", r"exported (bert_jax|hf): ")
  assert "results: " in out and "exported hf: " in out
  assert _no_tensorflow(modules)


def test_data_tool_prints_its_summary_only(tmp_path):
  text = tmp_path / "in.txt"
  docs = ["\n".join(f"Sentence {d} {s} of the little test corpus here."
                    for s in range(12)) for d in range(20)]
  text.write_text("\n\n".join(docs) + "\n")
  out, modules = _run(
      tmp_path, "bert_jax.create_pretraining_data", f"--input_file={text}",
      f"--output_dir={tmp_path / 'out'}",
      f"--vocab_file={test_train.VOCAB}", "--max_seq_length=32",
      "--max_predictions_per_seq=5", "--dupe_factor=1", "--num_workers=2",
      "--eval_fraction=0.2")
  _assert_own_lines(out, r"\d+ instances in \d+ shards, \d+ eval instances")
  assert _no_tensorflow(modules)


def test_convert_is_quiet_and_verbosity_brings_library_logs_back(tmp_path):
  args = ["--from=hf", "--to=bert_jax", minilm.model_path()]
  out, _ = _run(tmp_path, "bert_jax.convert", *args, str(tmp_path / "a"))
  _assert_own_lines(out, r"read hf checkpoint ", r"wrote bert_jax checkpoint")
  out, _ = _run(tmp_path, "bert_jax.convert", *args, str(tmp_path / "b"),
                "--verbosity=0")
  assert "orbax" in out.lower(), out[-3000:]  # orbax's INFO lines
  assert "wrote bert_jax checkpoint" in out


def test_no_tpu_means_the_cpu_backend_unless_asked(monkeypatch):
  from bert_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("JAX_PLATFORMS", "")
  assert cli.choose_jax_platform() is None  # the user's choice stands
  monkeypatch.delenv("JAX_PLATFORMS")
  pytest.importorskip("libtpu")
  from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] or (
      hardware_utils.has_visible_nvidia_gpu()):
    pytest.skip("this machine has an accelerator")
  monkeypatch.setattr(  # jax is already up in this process: config only
      "jax.config.update", lambda *a: None)
  assert cli.choose_jax_platform() == "cpu"
  assert os.environ["JAX_PLATFORMS"] == "cpu"
