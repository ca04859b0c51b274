"""BERT tokenization, exactly as Google's TF1 `tokenization.py` behaves.

`FullTokenizer` = `BasicTokenizer` (clean-up, CJK spacing, optional
lower-casing with accent stripping, whitespace and punctuation splitting)
followed by `WordpieceTokenizer` (greedy longest-match-first, `##`
continuations, [UNK] for words over 200 characters or with an unmatchable
piece). The pure-Python path is the specification; `encode_batch` runs the
same algorithm through the Rust `tokenizers` library, and the tests prove
the two identical.

SentencePiece models can stand in for the WordPiece vocabulary
(`SentencePieceTokenizer`); `create_tokenizer` picks by file type.
"""

from __future__ import annotations

import collections
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Blocks where the `tokenizers` fast path equals the TF1 algorithm: Latin,
# Greek (but capital sigma), Cyrillic, Hebrew, most Arabic, Devanagari, Latin
# Extended Additional, general punctuation and symbols, CJK and kana, Hangul,
# full-width forms, emoji.
_FAST_SAFE = re.compile(
    "[\x00-\u03a2\u03a4-\u061c\u061e-\u07fc\u07fe\u07ff\u0900-\u097f"
    "\u1e00-\u1eff\u2000-\u2bff\u3000-\u9fff\uac00-\ud7af\uff00-\uffef"
    "\U0001f000-\U0001faff]*")
MAX_INPUT_CHARS_PER_WORD = 200


def _is_whitespace(char: str) -> bool:
  if char in (" ", "\t", "\n", "\r"):
    return True
  return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
  if char in ("\t", "\n", "\r"):
    return False
  return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
  cp = ord(char)
  # ASCII non-letter/number symbols count as punctuation, as in TF1 ("^", "$",
  # "`" are not Unicode P* but are split off all the same).
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
  # The CJK Unified Ideographs blocks that TF1 spaces out (not Hangul, kana).
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
          or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
          or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
          or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def load_vocab(vocab_file: str) -> dict[str, int]:
  """Reads a one-token-per-line vocab into token -> id (line number)."""
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f"vocab file not found: {vocab_file}")
  vocab: dict[str, int] = collections.OrderedDict()
  with open(vocab_file, encoding="utf-8") as f:
    for index, line in enumerate(f):
      token = line.rstrip("\n").strip()
      vocab.setdefault(token, index)
  if not vocab:
    raise ValueError(f"{vocab_file}: the vocab file is empty")
  return vocab


class BasicTokenizer:
  """Clean-up, CJK spacing, lower-casing/accents, punctuation splitting."""

  def __init__(self, do_lower_case: bool = True):
    self.do_lower_case = do_lower_case

  def tokenize(self, text: str) -> list[str]:
    text = self._clean_text(text)
    text = self._space_cjk(text)
    tokens = []
    for token in text.split():
      if self.do_lower_case:
        token = self._strip_accents(token.lower())
      tokens.extend(self._split_on_punc(token))
    return " ".join(tokens).split()

  @staticmethod
  def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")

  @staticmethod
  def _split_on_punc(text: str) -> list[str]:
    out: list[list[str]] = []
    start_new = True
    for char in text:
      if _is_punctuation(char):
        out.append([char])
        start_new = True
      else:
        if start_new:
          out.append([])
        start_new = False
        out[-1].append(char)
    return ["".join(x) for x in out]

  @staticmethod
  def _space_cjk(text: str) -> str:
    return "".join(f" {c} " if _is_cjk(ord(c)) else c for c in text)

  @staticmethod
  def _clean_text(text: str) -> str:
    out = []
    for char in text:
      cp = ord(char)
      if cp == 0 or cp == 0xFFFD or _is_control(char):
        continue
      out.append(" " if _is_whitespace(char) else char)
    return "".join(out)


class WordpieceTokenizer:
  """Greedy longest-match-first WordPiece over whitespace-split tokens."""

  def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]",
               max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD):
    self.vocab = vocab
    self.unk_token = unk_token
    self.max_input_chars_per_word = max_input_chars_per_word

  def tokenize(self, text: str) -> list[str]:
    output = []
    for token in text.split():
      if len(token) > self.max_input_chars_per_word:
        output.append(self.unk_token)
        continue
      pieces = []
      start = 0
      while start < len(token):
        end = len(token)
        piece = None
        while start < end:
          candidate = token[start:end]
          if start > 0:
            candidate = "##" + candidate
          if candidate in self.vocab:
            piece = candidate
            break
          end -= 1
        if piece is None:
          pieces = [self.unk_token]
          break
        pieces.append(piece)
        start = end
      output.extend(pieces)
    return output


class _PairEncoderMixin:
  """[CLS] A [SEP] B [SEP] encoding shared by both tokenizer kinds."""

  vocab: dict[str, int]

  def tokenize(self, text: str) -> list[str]:
    raise NotImplementedError

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    raise NotImplementedError

  @property
  def special_ids(self) -> dict[str, int]:
    return {t: self.vocab[t] for t in SPECIAL_TOKENS if t in self.vocab}

  def encode_pair(self, text_a: str, text_b: str | None = None,
                  max_seq_length: int = 128) -> dict[str, np.ndarray]:
    """input_ids, input_mask, segment_ids (int32, padded) + `truncated`."""
    return self.encode_tokens_pair(
        self.tokenize(text_a),
        None if text_b is None else self.tokenize(text_b), max_seq_length)

  def encode_tokens_pair(self, tokens_a: list[str],
                         tokens_b: list[str] | None,
                         max_seq_length: int) -> dict[str, np.ndarray]:
    tokens_a = list(tokens_a)
    tokens_b = None if tokens_b is None else list(tokens_b)
    budget = max_seq_length - (3 if tokens_b is not None else 2)
    if budget < 0:
      raise ValueError(f"max_seq_length={max_seq_length} is too short for "
                       "[CLS]/[SEP]")
    truncated = truncate_seq_pair(tokens_a, tokens_b or [], budget) \
        if tokens_b is not None else len(tokens_a) > budget
    tokens_a = tokens_a[:budget] if tokens_b is None else tokens_a
    tokens = ["[CLS]"] + tokens_a + ["[SEP]"]
    segment_ids = [0] * len(tokens)
    if tokens_b is not None:
      tokens += tokens_b + ["[SEP]"]
      segment_ids += [1] * (len(tokens_b) + 1)
    ids = self.convert_tokens_to_ids(tokens)
    n = len(ids)
    out = {
        "input_ids": np.zeros(max_seq_length, np.int32),
        "input_mask": np.zeros(max_seq_length, np.int32),
        "segment_ids": np.zeros(max_seq_length, np.int32),
    }
    out["input_ids"][:n] = ids
    out["input_mask"][:n] = 1
    out["segment_ids"][:n] = segment_ids
    out["tokens"] = tokens
    out["truncated"] = truncated
    return out


def truncate_seq_pair(tokens_a: list[str], tokens_b: list[str],
                      max_length: int) -> bool:
  """Pops from the end of the longer list until both fit (TF1's rule).

  Returns whether anything was removed.
  """
  truncated = False
  while len(tokens_a) + len(tokens_b) > max_length:
    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    longer.pop()
    truncated = True
  return truncated


class FullTokenizer(_PairEncoderMixin):
  """BasicTokenizer + WordpieceTokenizer over a `vocab.txt`."""

  def __init__(self, vocab_file: str, do_lower_case: bool = True):
    self.vocab_file = vocab_file
    self.vocab = load_vocab(vocab_file)
    missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
    if "[UNK]" in missing:
      raise ValueError(f"{vocab_file}: the vocab has no [UNK] token")
    self.inv_vocab = {v: k for k, v in self.vocab.items()}
    self.do_lower_case = do_lower_case
    self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
    self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
    self._fast = None

  @property
  def vocab_size(self) -> int:
    return len(self.inv_vocab)

  def tokenize(self, text: str) -> list[str]:
    return [piece
            for token in self.basic_tokenizer.tokenize(text)
            for piece in self.wordpiece_tokenizer.tokenize(token)]

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    return [self.vocab[t] for t in tokens]

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    return [self.inv_vocab[int(i)] for i in ids]

  @staticmethod
  def is_continuation(token: str) -> bool:
    """True for a piece that continues a word (whole-word masking)."""
    return token.startswith("##")

  def continuation_mask(self, ids: Sequence[int]) -> np.ndarray:
    return np.array([self.is_continuation(self.inv_vocab[int(i)])
                     for i in ids], bool)

  # -- fast path ------------------------------------------------------------

  def _fast_tokenizer(self):
    if self._fast is None:
      from tokenizers import Tokenizer, models, normalizers, pre_tokenizers  # pylint: disable=g-import-not-at-top
      tok = Tokenizer(models.WordPiece(
          {t: i for t, i in self.vocab.items()}, unk_token="[UNK]",
          max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
      tok.normalizer = normalizers.BertNormalizer(
          clean_text=True, handle_chinese_chars=True,
          strip_accents=self.do_lower_case, lowercase=self.do_lower_case)
      tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
      self._fast = tok
    return self._fast

  @staticmethod
  def _needs_slow_path(text: str) -> bool:
    # The Rust normaliser follows a newer Unicode than Python 3.11's
    # unicodedata, drops private-use characters, lacks one CJK block and
    # lower-cases a final sigma differently. Scanning every code point below
    # U+30000 through both paths (tests/test_tokenization.py does) leaves
    # these blocks identical; a text with anything else takes the exact path.
    return _FAST_SAFE.fullmatch(text) is None

  def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
    """Same as [tokenize(t) for t in texts], through `tokenizers`."""
    fast_idx = [i for i, t in enumerate(texts) if not self._needs_slow_path(t)]
    out: list[list[str]] = [[] for _ in texts]
    if fast_idx:
      encodings = self._fast_tokenizer().encode_batch(
          [texts[i] for i in fast_idx], add_special_tokens=False)
      for i, enc in zip(fast_idx, encodings):
        out[i] = enc.tokens
    for i, text in enumerate(texts):
      if self._needs_slow_path(text):
        out[i] = self.tokenize(text)
    return out

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no specials), fast; equal to the slow path."""
    return [self.convert_tokens_to_ids(t) for t in self.tokenize_batch(texts)]

  def encode_pair_batch(self, pairs: Sequence[tuple[str, str | None]],
                        max_seq_length: int = 128) -> dict[str, np.ndarray]:
    """encode_pair over many (a, b) pairs, stacked; `truncated` counts."""
    a = self.tokenize_batch([p[0] for p in pairs])
    b_idx = [i for i, p in enumerate(pairs) if p[1] is not None]
    b_tok = dict(zip(b_idx, self.tokenize_batch([pairs[i][1]
                                                 for i in b_idx])))
    rows = [self.encode_tokens_pair(a[i], b_tok.get(i), max_seq_length)
            for i in range(len(pairs))]
    return {
        k: np.stack([r[k] for r in rows])
        for k in ("input_ids", "input_mask", "segment_ids")
    } | {"tokens": [r["tokens"] for r in rows],
         "truncated": np.array([r["truncated"] for r in rows])}


class SentencePieceTokenizer(_PairEncoderMixin):
  """A SentencePiece model used as BERT's vocabulary.

  The model must define [PAD] [UNK] [CLS] [SEP] [MASK] as pieces (build_vocab
  trains it so). Pieces that start a word carry the '▁' prefix; the others
  continue a word (whole-word masking).
  """

  def __init__(self, model_file: str, do_lower_case: bool = True):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.exists(model_file):
      raise FileNotFoundError(f"sentencepiece model not found: {model_file}")
    self.vocab_file = model_file
    self.sp = spm.SentencePieceProcessor(model_file=model_file)
    self.do_lower_case = do_lower_case
    self.vocab = {self.sp.id_to_piece(i): i
                  for i in range(self.sp.get_piece_size())}
    self.inv_vocab = {i: p for p, i in self.vocab.items()}
    missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
    if missing:
      raise ValueError(f"{model_file}: the sentencepiece model lacks the "
                       f"special pieces {missing}")

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def tokenize(self, text: str) -> list[str]:
    if self.do_lower_case:
      text = text.lower()
    return self.sp.encode(text, out_type=str)

  def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
    if self.do_lower_case:
      texts = [t.lower() for t in texts]
    return self.sp.encode(list(texts), out_type=str)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.convert_tokens_to_ids(t) for t in self.tokenize_batch(texts)]

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    unk = self.vocab["[UNK]"]
    return [self.vocab.get(t, unk) for t in tokens]

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    return [self.inv_vocab[int(i)] for i in ids]

  @staticmethod
  def is_continuation(token: str) -> bool:
    return not token.startswith("\u2581") and token not in SPECIAL_TOKENS

  def continuation_mask(self, ids: Sequence[int]) -> np.ndarray:
    return np.array([self.is_continuation(self.inv_vocab[int(i)])
                     for i in ids], bool)


def create_tokenizer(vocab_file: str, do_lower_case: bool = True):
  """A SentencePieceTokenizer for a `.model` file, else a FullTokenizer."""
  if vocab_file.endswith(".model"):
    return SentencePieceTokenizer(vocab_file, do_lower_case)
  return FullTokenizer(vocab_file, do_lower_case)
