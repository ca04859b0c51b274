"""Trains a new vocabulary from text: WordPiece (vocab.txt) or SentencePiece.

    python -m bert_jax.build_vocab --input_file='data/corpus/*.txt.gz' \
        --vocab_size=8000 --model=wordpiece --output=/tmp/vocab.txt

WordPiece uses the `tokenizers` trainer behind BERT's own normaliser and
pre-tokeniser, so the vocabulary fits `FullTokenizer`; the special tokens
come first ([PAD]=0, [UNK], [CLS], [SEP], [MASK]) as in Google's vocabs.
SentencePiece writes `PREFIX.model` / `PREFIX.vocab` (`--output` may name
either the prefix or the `.model` file) with [PAD]=0, [UNK]=1 and [CLS],
[SEP], [MASK] as control pieces, loadable by `SentencePieceTokenizer`.
Input files may be plain, .gz or .bz2 text, one sentence or paragraph a line.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

from absl import app
from absl import flags
from absl import logging

from bert_jax import cli
from bert_jax import sources
from bert_jax import tokenization

# SentencePiece holds its training sentences in memory; beyond this many it
# samples (shuffled) rather than exhausting the host.
MAX_SENTENCEPIECE_SENTENCES = 10_000_000


def iter_lines(files: Sequence[str]) -> Iterator[str]:
  """Non-blank lines of every file, read as the pre-training data reads
  them (`sources.iter_lines`: bad UTF-8 repaired, over-long lines skipped)."""
  stats = sources.SourceStats()
  for path in files:
    yield from (line for line in sources.iter_lines(path, stats) if line)
  if stats.repaired_lines or stats.skipped_long_lines:
    logging.info("repaired %d lines of invalid UTF-8, skipped %d over-long "
                 "lines", stats.repaired_lines, stats.skipped_long_lines)


def _check_vocab_size(vocab_size: int) -> None:
  if vocab_size <= len(tokenization.SPECIAL_TOKENS):
    raise ValueError(f"--vocab_size={vocab_size} must exceed the "
                     f"{len(tokenization.SPECIAL_TOKENS)} special tokens")


def _no_text_error(files: Sequence[str]) -> ValueError:
  shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more"
                                  if len(files) > 3 else "")
  return ValueError(f"--input_file: no text in {shown}")


def default_limit_alphabet(vocab_size: int) -> int:
  """Most characters kept as pieces: room is left for real word pieces.

  Rarer characters become [UNK], as in Google's vocabularies; each kept one
  may also take a `##` entry.
  """
  return min(1000, vocab_size // 4)


def train_wordpiece(files: Sequence[str], vocab_size: int, output: str,
                    do_lower_case: bool = True,
                    limit_alphabet: int | None = None,
                    show_progress: bool = False) -> int:
  """Trains and writes a vocab.txt; returns its size."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  _check_vocab_size(vocab_size)
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True,
      strip_accents=do_lower_case, lowercase=do_lower_case)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  trainer = tokenizers.trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(tokenization.SPECIAL_TOKENS),
      continuing_subword_prefix="##", show_progress=show_progress,
      limit_alphabet=(default_limit_alphabet(vocab_size)
                      if limit_alphabet is None else limit_alphabet))
  tok.train_from_iterator(iter_lines(files), trainer=trainer)
  vocab = tok.get_vocab()
  if len(vocab) <= len(tokenization.SPECIAL_TOKENS):
    raise _no_text_error(files)
  if len(vocab) > vocab_size:
    # The trainer keeps every character of the (limited) alphabet.
    raise ValueError(f"--vocab_size={vocab_size} is too small: the input's "
                     f"characters alone need {len(vocab)} entries (lower "
                     "--limit_alphabet)")
  ordered = sorted(vocab, key=vocab.get)
  # Ids must be the line numbers FullTokenizer will read back.
  assert [vocab[t] for t in ordered] == list(range(len(ordered)))
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + ".incomplete"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(t + "\n" for t in ordered)
  os.replace(tmp, output)
  return len(ordered)


def sentencepiece_prefix(output: str) -> str:
  """PREFIX for PREFIX.model / PREFIX.vocab, whichever form was given."""
  return output[:-len(".model")] if output.endswith(".model") else output


def train_sentencepiece(files: Sequence[str], vocab_size: int, output: str,
                        do_lower_case: bool = True) -> int:
  """Trains PREFIX.model / PREFIX.vocab with BERT's special pieces."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  _check_vocab_size(vocab_size)
  prefix = sentencepiece_prefix(output)
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp_dir:
    # The text is written once, preprocessed exactly as the tokenizer will
    # preprocess it, so training and use see the same strings.
    text_file = os.path.join(tmp_dir, "input.txt")
    n = 0
    with open(text_file, "w", encoding="utf-8") as f:
      for line in iter_lines(files):
        f.write(tokenization.preprocess_for_sentencepiece(
            line, do_lower_case) + "\n")
        n += 1
    if n == 0:
      raise _no_text_error(files)
    logging.info("training sentencepiece on %d lines", n)
    try:
      spm.SentencePieceTrainer.train(
          input=text_file, model_prefix=prefix, vocab_size=vocab_size,
          model_type="unigram", pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
          pad_piece="[PAD]", unk_piece="[UNK]",
          control_symbols=["[CLS]", "[SEP]", "[MASK]"],
          # A small corpus may not support vocab_size pieces: take fewer
          # rather than fail.
          hard_vocab_limit=False,
          input_sentence_size=MAX_SENTENCEPIECE_SENTENCES,
          shuffle_input_sentence=True, minloglevel=2)
    except RuntimeError as e:
      raise ValueError(f"sentencepiece training on {len(files)} file(s) "
                       f"failed: {e}") from e
  return spm.SentencePieceProcessor(
      model_file=prefix + ".model").get_piece_size()


def build(input_file: str, vocab_size: int, model: str, output: str,
          do_lower_case: bool = True, limit_alphabet: int | None = None,
          show_progress: bool = False) -> int:
  """Expands the globs, trains, writes; returns the vocabulary size."""
  files = sources.expand_inputs(input_file, tfds=False)
  logging.info("training a %s vocabulary of at most %d on %d file(s)", model,
               vocab_size, len(files))
  if model == "wordpiece":
    return train_wordpiece(files, vocab_size, output, do_lower_case,
                           limit_alphabet, show_progress=show_progress)
  if model == "sentencepiece":
    return train_sentencepiece(files, vocab_size, output, do_lower_case)
  raise ValueError(f"--model={model!r}: expected wordpiece or sentencepiece")


def define_flags() -> None:
  """CLI flags; defined only when run as a program (no import side effects)."""
  flags.DEFINE_string("input_file", None,
                      "Comma-separated globs of text files.")
  flags.DEFINE_integer("vocab_size", 30522, "Size of the vocabulary to train.")
  flags.DEFINE_enum("model", "wordpiece", ["wordpiece", "sentencepiece"],
                    "Vocabulary kind.")
  flags.DEFINE_string(
      "output", None, "vocab.txt path (wordpiece) or model prefix "
      "(sentencepiece: writes PREFIX.model and PREFIX.vocab).")
  flags.DEFINE_boolean("do_lower_case", True, "Lower-case the text.")
  flags.DEFINE_integer(
      "limit_alphabet", None, "wordpiece: most distinct characters kept "
      "(default min(1000, vocab_size // 4)); rarer ones become [UNK].")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  if not f.input_file:
    raise app.UsageError("--input_file is required")
  if not f.output:
    raise app.UsageError("--output is required")
  try:
    size = build(f.input_file, f.vocab_size, f.model, f.output,
                 f.do_lower_case, f.limit_alphabet, show_progress=True)
  except (FileNotFoundError, ValueError) as e:
    # Bad input is the user's to fix: one line, no traceback.
    sys.exit(f"build_vocab: error: {e}")
  out = (sentencepiece_prefix(f.output) + ".model"
         if f.model == "sentencepiece" else f.output)
  print(f"{f.model} vocabulary: {size} entries -> {out}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
