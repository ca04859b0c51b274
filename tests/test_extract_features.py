"""extract_features writes the original schema with transformers' values."""

import json
import os

import numpy as np
import pytest

from bert_jax import extract_features
from bert_jax import pretrained
from tests import minilm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _reference_hidden(path, text_a, text_b, max_len=128):
  tok = transformers.BertTokenizer.from_pretrained(path)
  enc = tok(text_a, text_b, truncation="longest_first", max_length=max_len,
            return_tensors="pt")
  model = transformers.BertModel.from_pretrained(path).eval()
  with torch.no_grad():
    out = model(**enc, output_hidden_states=True)
  tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
  # hidden_states[0] is the embeddings; encoder layer k is hidden_states[k+1].
  return tokens, [h[0].numpy() for h in out.hidden_states[1:]]


def test_schema_values_and_pairs(tmp_path):
  path = minilm.model_path()
  lines = [minilm.SENTENCES[0], " ||| ".join(minilm.PAIRS[1]),
           minilm.SENTENCES[2]]
  inp = tmp_path / "in.txt"
  inp.write_text("\n".join(lines) + "\n")
  out = tmp_path / "out.jsonl"
  n = extract_features.run(path, str(inp), str(out), layers="-1,-2,0",
                           batch_size=2)
  assert n == 3
  records = [json.loads(l) for l in out.read_text().splitlines()]
  assert [r["linex_index"] for r in records] == [0, 1, 2]
  for record, line in zip(records, lines):
    assert set(record) == {"linex_index", "features"}
    a, _, b = line.partition(" ||| ")
    tokens, hidden = _reference_hidden(path, a, b or None)
    assert [f["token"] for f in record["features"]] == tokens
    for t, feature in enumerate(record["features"]):
      assert set(feature) == {"token", "layers"}
      assert [l["index"] for l in feature["layers"]] == [-1, -2, 0]
      for layer in feature["layers"]:
        assert set(layer) == {"index", "values"}
        ref = hidden[layer["index"]][t]
        got = np.array(layer["values"])
        assert got.shape == (384,)
        # Values are rounded to 6 decimals, as the original writes them.
        assert np.abs(got - ref).max() <= 1e-5 + 5e-7
        assert all(round(v, 6) == v for v in layer["values"][:20])


def test_truncation_counted_and_all_formats(tmp_path,
                                            tmp_path_factory):
  path = minilm.model_path()
  native = str(tmp_path / "native")
  cfg, params, _ = pretrained.import_hf(path)
  pretrained.save_bert_jax(cfg, params, os.path.join(path, "vocab.txt"), native)
  inp = tmp_path / "in.txt"
  inp.write_text("word " * 500 + "\nshort line ||| " + "other " * 300 + "\n\n")
  outs = []
  for ckpt in (path, native):
    ex = extract_features.FeatureExtractor(ckpt, layers="-1",
                                           max_seq_length=16, batch_size=4)
    records = list(ex.features(inp.read_text().splitlines()))
    assert ex.num_truncated == 2
    assert [len(r["features"]) for r in records] == [16, 16, 2]
    outs.append(records)
  assert outs[0] == outs[1]
  # Google's TF1 format too (tanh GELU, so values differ a little).
  tf1, _ = minilm.tf1_checkpoint(tmp_path_factory)
  assert pretrained.detect_format(tf1) == "tf1"
  ex = extract_features.FeatureExtractor(tf1, layers="-1", max_seq_length=16)
  records = list(ex.features(inp.read_text().splitlines()))
  assert [[f["token"] for f in r["features"]] for r in records] == [
      [f["token"] for f in r["features"]] for r in outs[0]]
  a = np.array(records[2]["features"][0]["layers"][0]["values"])
  b = np.array(outs[0][2]["features"][0]["layers"][0]["values"])
  assert 0 < np.abs(a - b).max() < 0.05


def test_bad_flags(tmp_path):
  with pytest.raises(ValueError, match="must be in \\[-6, 5\\]"):
    extract_features.parse_layers("-7", 6)
  with pytest.raises(ValueError, match="comma-separated integers"):
    extract_features.parse_layers("last", 6)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    extract_features.run(minilm.model_path(), str(tmp_path / "missing.txt"),
                         str(tmp_path / "o.jsonl"))
  assert not (tmp_path / "o.jsonl").exists()
