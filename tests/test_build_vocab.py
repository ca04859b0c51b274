"""build_vocab trains vocabularies that the tokenizers load and use."""

import glob
import gzip

import pytest

from bert_jax import build_vocab
from bert_jax import tokenization


def _corpus(tmp_path):
  lines = []
  for path in sorted(glob.glob("/usr/share/common-licenses/*"))[:6]:
    with open(path, encoding="utf-8", errors="replace") as f:
      lines.extend(l.strip() for l in f if l.strip())
  assert len(lines) > 500
  path = tmp_path / "corpus.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return str(path), lines


def test_wordpiece_vocab(tmp_path):
  corpus, lines = _corpus(tmp_path)
  out = str(tmp_path / "vocab.txt")
  size = build_vocab.train_wordpiece([corpus], 1000, out)
  assert size <= 1000
  with open(out, encoding="utf-8") as f:
    vocab = [l.rstrip("\n") for l in f]
  assert vocab[:5] == list(tokenization.SPECIAL_TOKENS)
  assert len(set(vocab)) == len(vocab) == size
  tok = tokenization.FullTokenizer(out)
  pieces = [p for l in lines[:300] for p in tok.tokenize(l)]
  assert pieces and pieces.count("[UNK]") / len(pieces) < 0.01
  # Pieces rejoin into the basic tokens of the text they came from.
  line = lines[10]
  words = tokenization.BasicTokenizer().tokenize(line)
  joined = " ".join(tok.tokenize(line)).replace(" ##", "")
  assert joined.split() == words


def test_sentencepiece_vocab(tmp_path):
  corpus, lines = _corpus(tmp_path)
  prefix = str(tmp_path / "spm")
  size = build_vocab.train_sentencepiece([corpus], 800, prefix)
  assert 0 < size <= 800
  tok = tokenization.create_tokenizer(prefix + ".model")
  assert isinstance(tok, tokenization.SentencePieceTokenizer)
  assert tok.vocab["[PAD]"] == 0
  assert set(tokenization.SPECIAL_TOKENS) <= set(tok.vocab)
  out = tok.encode_pair(lines[0], lines[1], max_seq_length=64)
  assert out["tokens"][0] == "[CLS]" and out["tokens"].count("[SEP]") == 2
  pieces = tok.tokenize(lines[3])
  assert "".join(pieces).replace("\u2581", " ").strip() == " ".join(
      lines[3].lower().split())
  assert tok.continuation_mask(tok.convert_tokens_to_ids(pieces)).any()


def test_cli_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no file matches"):
    build_vocab.expand_inputs(str(tmp_path / "missing*.txt"))
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n")
  with pytest.raises(ValueError, match="no text found"):
    build_vocab.train_wordpiece([str(empty)], 100, str(tmp_path / "v.txt"))
  assert not (tmp_path / "v.txt").exists()
