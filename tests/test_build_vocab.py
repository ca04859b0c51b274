"""build_vocab trains vocabularies that the tokenizers load and use."""

import glob
import gzip
import os
import subprocess
import sys
import unicodedata

import pytest

from bert_jax import build_vocab
from bert_jax import tokenization

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata", "tokenization")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A few licences (real English) and a multilingual sample, gzipped."""
  lines = []
  for path in sorted(glob.glob("/usr/share/common-licenses/*"))[:6] + [
      os.path.join(TESTDATA, "multilingual.txt")]:
    with open(path, encoding="utf-8", errors="replace") as f:
      lines.extend(l.strip() for l in f if l.strip())
  if len(lines) < 500:
    pytest.skip("needs /usr/share/common-licenses for a corpus")
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return str(path), lines


def test_wordpiece_vocab(tmp_path, corpus):
  path, lines = corpus
  out = str(tmp_path / "sub" / "vocab.txt")
  size = build_vocab.build(path, 1000, "wordpiece", out)
  assert 900 < size <= 1000
  with open(out, encoding="utf-8") as f:
    vocab = [l.rstrip("\n") for l in f]
  assert vocab[:5] == list(tokenization.SPECIAL_TOKENS)
  assert len(set(vocab)) == len(vocab) == size
  assert not os.path.exists(out + ".incomplete")
  tok = tokenization.FullTokenizer(out)
  basic = tokenization.BasicTokenizer()
  pieces = []
  for line in lines[:400]:
    line_pieces = tok.tokenize(line)
    pieces += line_pieces
    # Pieces rejoin into exactly the words they came from.
    words = " ".join(line_pieces).replace(" ##", "").split()
    assert words == [w if "[UNK]" not in tok.tokenize(w) else "[UNK]"
                     for w in basic.tokenize(line)], line
  assert pieces.count("[UNK]") / len(pieces) < 0.01
  # Frequent words of the training text are single pieces.
  assert tok.tokenize("the license software") == ["the", "license",
                                                  "software"]


def test_cased_wordpiece_vocab(tmp_path, corpus):
  path, lines = corpus
  out = str(tmp_path / "cased.txt")
  build_vocab.build(path, 600, "wordpiece", out, do_lower_case=False)
  tok = tokenization.FullTokenizer(out, do_lower_case=False)
  pieces = tok.tokenize("GNU General Public License")
  assert "[UNK]" not in pieces
  assert " ".join(pieces).replace(" ##", "") == "GNU General Public License"
  pieces = [p for l in lines[:300] for p in tok.tokenize(l)]
  assert pieces.count("[UNK]") / len(pieces) < 0.01


def test_sentencepiece_vocab(tmp_path, corpus):
  path, lines = corpus
  # Given with the .model suffix; the prefix is derived from it.
  out = str(tmp_path / "spm.model")
  size = build_vocab.build(path, 800, "sentencepiece", out)
  assert 0 < size <= 800
  assert os.path.exists(out) and os.path.exists(str(tmp_path / "spm.vocab"))
  tok = tokenization.create_tokenizer(out)
  assert isinstance(tok, tokenization.SentencePieceTokenizer)
  assert [tok.inv_vocab[i] for i in range(5)] == list(
      tokenization.SPECIAL_TOKENS)
  # Control pieces: text spelling a special token does not produce it.
  assert "[MASK]" not in tok.tokenize("a [MASK] b")
  enc = tok.encode_pair(lines[0], lines[1], max_seq_length=64)
  assert enc["tokens"][0] == "[CLS]" and enc["tokens"].count("[SEP]") == 2
  assert enc["input_ids"][0] == tok.vocab["[CLS]"]
  compared = 0
  for line in lines[:100]:
    text = line.lower()
    pieces = tok.tokenize(line)
    if "[UNK]" in pieces or unicodedata.normalize("NFKC", text) != text:
      continue
    # Pieces detokenise back to the text (spaces collapsed).
    assert "".join(pieces).replace("\u2581", " ").strip() == " ".join(
        text.split())
    assert tok.sp.decode(tok.convert_tokens_to_ids(pieces)) == " ".join(
        text.split())
    compared += 1
  assert compared > 80
  pieces = [p for l in lines[:300] for p in tok.tokenize(l)]
  assert pieces.count("[UNK]") / len(pieces) < 0.01
  mask = tok.continuation_mask(tok.convert_tokens_to_ids(pieces))
  starts = [p.startswith("\u2581") for p in pieces]
  assert mask.any() and not (mask & starts).any()
  assert tok.encode_batch(lines[:3]) == [
      tok.convert_tokens_to_ids(tok.tokenize(l)) for l in lines[:3]]


def test_bad_input(tmp_path):
  with pytest.raises(FileNotFoundError, match="no file matches .*missing"):
    build_vocab.build(str(tmp_path / "missing*.txt"), 100, "wordpiece",
                      str(tmp_path / "v.txt"))
  empty = tmp_path / "empty.txt"
  empty.write_text("\n  \n")
  for model in ("wordpiece", "sentencepiece"):
    out = tmp_path / f"{model}.out"
    with pytest.raises(ValueError, match="no text in .*empty.txt"):
      build_vocab.build(str(empty), 100, model, str(out))
    assert not list(tmp_path.glob(f"{model}.out*"))
  text = tmp_path / "text.txt"
  text.write_text("some words here\n" * 20)
  with pytest.raises(ValueError, match="--vocab_size=5 must exceed"):
    build_vocab.build(str(text), 5, "wordpiece", str(tmp_path / "v.txt"))
  with pytest.raises(ValueError, match="--vocab_size=8 is too small"):
    build_vocab.build(str(text), 8, "wordpiece", str(tmp_path / "v.txt"))
  with pytest.raises(ValueError, match="sentencepiece training .* failed"):
    build_vocab.build(str(text), 8, "sentencepiece", str(tmp_path / "s"))


def test_cli(tmp_path):
  text = tmp_path / "a.txt"
  text.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
  out = tmp_path / "vocab.txt"
  ok = subprocess.run(
      [sys.executable, "-m", "bert_jax.build_vocab",
       f"--input_file={tmp_path}/*.txt", "--vocab_size=60",
       "--model=wordpiece", f"--output={out}"],
      capture_output=True, text=True, check=False)
  assert ok.returncode == 0, ok.stderr
  assert tokenization.FullTokenizer(str(out)).tokenize("the cat") == [
      "the", "cat"]
  bad = subprocess.run(
      [sys.executable, "-m", "bert_jax.build_vocab",
       f"--input_file={tmp_path}/nothing*.gz", f"--output={out}"],
      capture_output=True, text=True, check=False)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      f"build_vocab: error: --input_file: no file matches "
      f"'{tmp_path}/nothing*.gz'"]
