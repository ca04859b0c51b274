"""Trains a new vocabulary from text: WordPiece (vocab.txt) or SentencePiece.

    python -m bert_jax.build_vocab --input_file='data/corpus/*.txt.gz' \
        --vocab_size=8000 --model=wordpiece --output=/tmp/vocab.txt

WordPiece uses the `tokenizers` trainer behind BERT's own normaliser and
pre-tokeniser, so the vocabulary fits `FullTokenizer`; the special tokens
come first ([PAD]=0, [UNK], [CLS], [SEP], [MASK]) as in Google's vocabs.
SentencePiece writes `OUTPUT.model` / `OUTPUT.vocab` with the same special
pieces, loadable by `SentencePieceTokenizer`. Input files may be plain,
.gz or .bz2 text.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import os
import tempfile
from collections.abc import Iterator, Sequence

from absl import app
from absl import flags
from absl import logging

from bert_jax import tokenization

def expand_inputs(patterns: str) -> list[str]:
  """Files matching comma-separated globs; a clear error if none match."""
  files = []
  for pattern in patterns.split(","):
    matched = sorted(glob.glob(pattern.strip()))
    if not matched:
      raise FileNotFoundError(f"--input_file: no file matches {pattern!r}")
    files.extend(matched)
  return files


def open_text(path: str):
  """Opens plain, .gz or .bz2 text; undecodable bytes are replaced."""
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", errors="replace")
  if path.endswith(".bz2"):
    return bz2.open(path, "rt", encoding="utf-8", errors="replace")
  return open(path, encoding="utf-8", errors="replace")


def iter_lines(files: Sequence[str]) -> Iterator[str]:
  for path in files:
    with open_text(path) as f:
      for line in f:
        line = line.strip()
        if line:
          yield line


def train_wordpiece(files: Sequence[str], vocab_size: int, output: str,
                    do_lower_case: bool = True) -> int:
  """Trains and writes a vocab.txt; returns its size."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True,
      strip_accents=do_lower_case, lowercase=do_lower_case)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(tokenization.SPECIAL_TOKENS),
      continuing_subword_prefix="##", show_progress=False)
  tok.train_from_iterator(iter_lines(files), trainer=trainer)
  vocab = tok.get_vocab()
  if len(vocab) <= len(tokenization.SPECIAL_TOKENS):
    raise ValueError(f"--input_file: no text found in {len(files)} file(s)")
  ordered = sorted(vocab, key=vocab.get)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + ".incomplete"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(t + "\n" for t in ordered)
  os.replace(tmp, output)
  return len(ordered)


def train_sentencepiece(files: Sequence[str], vocab_size: int, prefix: str,
                        do_lower_case: bool = True) -> int:
  """Trains PREFIX.model / PREFIX.vocab with BERT's special pieces."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False,
                                   encoding="utf-8") as tmp:
    n = 0
    for line in iter_lines(files):
      tmp.write((line.lower() if do_lower_case else line) + "\n")
      n += 1
  try:
    if n == 0:
      raise ValueError(f"--input_file: no text found in {len(files)} file(s)")
    spm.SentencePieceTrainer.train(
        input=tmp.name, model_prefix=prefix, vocab_size=vocab_size,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, unk_piece="[UNK]",
        pad_piece="[PAD]", user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        hard_vocab_limit=False, minloglevel=2)
  finally:
    os.remove(tmp.name)
  return spm.SentencePieceProcessor(
      model_file=prefix + ".model").get_piece_size()


def define_flags() -> None:
  """CLI flags; defined only when run as a program (no import side effects)."""
  flags.DEFINE_string("input_file", None, "Comma-separated globs of text files.")
  flags.DEFINE_integer("vocab_size", 30522, "Size of the vocabulary to train.")
  flags.DEFINE_enum("model", "wordpiece", ["wordpiece", "sentencepiece"],
                    "Vocabulary kind.")
  flags.DEFINE_string(
      "output", None, "vocab.txt path (wordpiece) or model prefix "
      "(sentencepiece: writes PREFIX.model and PREFIX.vocab).")
  flags.DEFINE_boolean("do_lower_case", True, "Lower-case the text.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  if not f.input_file:
    raise app.UsageError("--input_file is required")
  if not f.output:
    raise app.UsageError("--output is required")
  if f.vocab_size <= len(tokenization.SPECIAL_TOKENS):
    raise app.UsageError(f"--vocab_size={f.vocab_size} must exceed the "
                         f"{len(tokenization.SPECIAL_TOKENS)} special tokens")
  files = expand_inputs(f.input_file)
  train = train_wordpiece if f.model == "wordpiece" else train_sentencepiece
  size = train(files, f.vocab_size, f.output, f.do_lower_case)
  logging.info("wrote a %s vocabulary of %d entries to %s", f.model, size,
               f.output)
  print(f"{f.model} vocabulary: {size} entries -> {f.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
