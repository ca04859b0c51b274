"""BERT tokenization, exactly as Google's TF1 `tokenization.py` behaves.

`FullTokenizer` = `BasicTokenizer` (clean-up, CJK spacing, optional
lower-casing with accent stripping, whitespace and punctuation splitting)
followed by `WordpieceTokenizer` (greedy longest-match-first, `##`
continuations, [UNK] for words over 200 characters or with an unmatchable
piece). The pure-Python path is the specification; `tokenize_batch` and
`encode_batch` take faster routes that the tests prove identical to it: ASCII
text through two regular expressions and a per-word WordPiece memo, other
text through the Rust `tokenizers` library wherever the two agree (see
`fast_path_accepts`).

SentencePiece models can stand in for the WordPiece vocabulary
(`SentencePieceTokenizer`); `create_tokenizer` picks by file type. Both kinds
encode `[CLS] A [SEP] B [SEP]` pairs (`encode_pair`) and tell which pieces
continue a word (`is_continuation`, `continuation_mask`) for whole-word
masking.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 200
SENTENCEPIECE_WORD_START = "\u2581"


def convert_to_unicode(text: str | bytes) -> str:
  """Text as str; UTF-8 bytes are decoded dropping bad bytes, as TF1 does."""
  if isinstance(text, str):
    return text
  if isinstance(text, bytes):
    return text.decode("utf-8", "ignore")
  raise TypeError(f"expected str or bytes, got {type(text).__name__}")


def read_vocab(vocab_file: str) -> list[str]:
  """The tokens of a one-token-per-line vocab file; line number = id."""
  if not os.path.isfile(vocab_file):
    raise FileNotFoundError(f"vocab file not found: {vocab_file}")
  try:
    # Only "\n" ends a line (TF1 reads with GFile.readline); each token is
    # then stripped of surrounding whitespace, "\r" included.
    with open(vocab_file, encoding="utf-8", newline="\n") as f:
      tokens = [line.strip() for line in f]
  except UnicodeDecodeError as e:
    raise ValueError(f"{vocab_file}: not UTF-8 text ({e.reason} at byte "
                     f"{e.start}); expected one token per line") from e
  if not tokens:
    raise ValueError(f"{vocab_file}: the vocab file is empty")
  return tokens


def load_vocab(vocab_file: str) -> dict[str, int]:
  """token -> id; a repeated token keeps its last line, as in TF1."""
  return {token: index for index, token in enumerate(read_vocab(vocab_file))}


def _is_whitespace(char: str) -> bool:
  if char in (" ", "\t", "\n", "\r"):
    return True
  return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
  # Tab, newline and CR are Cc but count as whitespace. Only Cc/Cf go:
  # private-use and unassigned characters stay (and become [UNK]).
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


class BasicTokenizer:
  """Clean-up, CJK spacing, lower-casing/accents, punctuation splitting."""

  def __init__(self, do_lower_case: bool = True):
    self.do_lower_case = do_lower_case

  def tokenize(self, text: str | bytes) -> list[str]:
    text = self._clean_text(convert_to_unicode(text))
    text = self._space_cjk(text)
    tokens = []
    # str.split() also splits on U+2028/U+2029 and other non-Zs separators
    # that clean-up keeps, exactly like TF1's whitespace_tokenize.
    for token in text.split():
      if self.do_lower_case:
        # Lower-case before NFD: the final-sigma rule and "İ" -> "i̇" need the
        # composed form, and TF1 does it in this order.
        token = self._strip_accents(token.lower())
      tokens.extend(self._split_on_punc(token))
    return " ".join(tokens).split()

  @staticmethod
  def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")

  @staticmethod
  def _split_on_punc(text: str) -> list[str]:
    out: list[str] = []
    word: list[str] = []
    for char in text:
      if _is_punctuation(char):
        if word:
          out.append("".join(word))
          word = []
        out.append(char)
      else:
        word.append(char)
    if word:
      out.append("".join(word))
    return out

  @staticmethod
  def _space_cjk(text: str) -> str:
    return "".join(f" {c} " if _is_cjk(ord(c)) else c for c in text)

  @staticmethod
  def _clean_text(text: str) -> str:
    out = []
    for char in text:
      if char in ("\x00", "\ufffd") or _is_control(char):
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

  def tokenize(self, text: str | bytes) -> list[str]:
    output = []
    for token in convert_to_unicode(text).split():
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
          # One unmatchable piece makes the whole word unknown.
          pieces = [self.unk_token]
          break
        pieces.append(piece)
        start = end
      output.extend(pieces)
    return output


def truncate_seq_pair(tokens_a: list[Any], tokens_b: list[Any],
                      max_length: int) -> bool:
  """Pops from the end of the longer list (B on ties) until both fit.

  TF1's `_truncate_seq_pair` for fine-tuning: one token at a time keeps more
  of a short segment than cutting both proportionally. Returns whether
  anything was removed.
  """
  truncated = False
  while len(tokens_a) + len(tokens_b) > max_length:
    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    longer.pop()
    truncated = True
  return truncated


class _TokenizerBase:
  """What both vocab kinds share: ids, pair encoding, word continuations."""

  vocab_file: str
  vocab: dict[str, int]
  inv_vocab: dict[int, str]

  def tokenize(self, text: str | bytes) -> list[str]:
    raise NotImplementedError

  def tokenize_batch(self, texts: Sequence[str | bytes]) -> list[list[str]]:
    return [self.tokenize(t) for t in texts]

  def is_continuation(self, token: str) -> bool:
    raise NotImplementedError

  @property
  def vocab_size(self) -> int:
    """Rows the embedding table needs: one per vocab line or piece."""
    return max(self.inv_vocab) + 1

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    vocab = self.vocab
    try:
      return [vocab[t] for t in tokens]
    except KeyError as e:
      raise KeyError(f"token {e.args[0]!r} is not in {self.vocab_file}"
                     ) from None

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    inv = self.inv_vocab
    try:
      return [inv[int(i)] for i in ids]
    except KeyError as e:
      raise KeyError(f"id {e.args[0]} is not in {self.vocab_file} "
                     f"(size {self.vocab_size})") from None

  def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]:
    """Token ids of each text, without [CLS]/[SEP]."""
    return [self.convert_tokens_to_ids(t) for t in self.tokenize_batch(texts)]

  @property
  def special_ids(self) -> dict[str, int]:
    return {t: self.vocab[t] for t in SPECIAL_TOKENS if t in self.vocab}

  @functools.cached_property
  def _continuation_table(self) -> np.ndarray:
    table = np.zeros(self.vocab_size, bool)
    for i, token in self.inv_vocab.items():
      table[i] = self.is_continuation(token)
    return table

  def continuation_mask(self, ids: Any) -> np.ndarray:
    """is_continuation of every id, any shape, in one gather."""
    return self._continuation_table[np.asarray(ids, np.int64)]

  def encode_pair(self, text_a: str | bytes, text_b: str | bytes | None = None,
                  max_seq_length: int = 128) -> dict[str, Any]:
    """`[CLS] A [SEP] (B [SEP])`, truncated and zero-padded.

    Returns input_ids, input_mask, segment_ids (int32 [max_seq_length]),
    plus `tokens` (the unpadded token strings) and `truncated` (bool).
    """
    return self.encode_tokens_pair(
        self.tokenize(text_a),
        None if text_b is None else self.tokenize(text_b), max_seq_length)

  def encode_pair_batch(self, pairs: Sequence[tuple[str, str | None]],
                        max_seq_length: int = 128) -> dict[str, Any]:
    """encode_pair over many (a, b) pairs, through the batch tokenizer.

    Returns int32 [n, max_seq_length] input_ids, input_mask, segment_ids,
    `tokens` (a list of lists) and `truncated` (a bool array).
    """
    a = self.tokenize_batch([p[0] for p in pairs])
    b_idx = [i for i, p in enumerate(pairs) if p[1] is not None]
    b_tok = dict(zip(b_idx, self.tokenize_batch([pairs[i][1]
                                                 for i in b_idx])))
    rows = [self.encode_tokens_pair(a[i], b_tok.get(i), max_seq_length)
            for i in range(len(pairs))]
    out: dict[str, Any] = {
        k: np.array([r[k] for r in rows], np.int32).reshape(
            len(rows), max_seq_length)
        for k in ("input_ids", "input_mask", "segment_ids")
    }
    out["tokens"] = [r["tokens"] for r in rows]
    out["truncated"] = np.array([r["truncated"] for r in rows], bool)
    return out

  def encode_tokens_pair(self, tokens_a: Sequence[str],
                         tokens_b: Sequence[str] | None,
                         max_seq_length: int) -> dict[str, Any]:
    """encode_pair for already tokenized segments."""
    missing = [t for t in ("[CLS]", "[SEP]") if t not in self.vocab]
    if missing:
      raise ValueError(f"{self.vocab_file}: the vocab has no {missing} "
                       "token(s), needed to encode sequences")
    tokens_a = list(tokens_a)
    budget = max_seq_length - (2 if tokens_b is None else 3)
    if budget < 0:
      raise ValueError(f"max_seq_length={max_seq_length} leaves no room for "
                       "[CLS] and [SEP]")
    if tokens_b is None:
      truncated = len(tokens_a) > budget
      del tokens_a[budget:]
    else:
      tokens_b = list(tokens_b)
      truncated = truncate_seq_pair(tokens_a, tokens_b, budget)
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segment_ids = [0] * len(tokens)
    if tokens_b is not None:
      tokens += [*tokens_b, "[SEP]"]
      segment_ids += [1] * (len(tokens_b) + 1)
    n = len(tokens)
    # TF1 pads with id 0 (which is [PAD] in Google's vocabs) and mask 0.
    out: dict[str, Any] = {
        k: np.zeros(max_seq_length, np.int32)
        for k in ("input_ids", "input_mask", "segment_ids")
    }
    out["input_ids"][:n] = self.convert_tokens_to_ids(tokens)
    out["input_mask"][:n] = 1
    out["segment_ids"][:n] = segment_ids
    out["tokens"] = tokens
    out["truncated"] = truncated
    return out


def _rule_role(category: str) -> str:
  """What the TF1 rules do with a character of this Unicode category."""
  if category == "Zs":
    return "whitespace"
  if category in ("Cc", "Cf"):
    return "control"
  if category.startswith("P"):
    return "punctuation"
  if category == "Mn":
    return "accent"
  return "other"


# Characters whose role changed since Unicode 3.2 (e.g. U+00A7 "§" So -> Po,
# U+00AD soft hyphen Pd -> Cf) long enough ago that the Rust tables agree
# with Python; the exhaustive test in tests/test_tokenization.py holds them
# to it.
_ROLE_CHANGED_BUT_AGREED = frozenset([
    0xA7, 0xAD, 0xB6, 0xF14, 0x17B4, 0x17B5, 0x200B, 0x2308, 0x2309, 0x230A,
    0x230B, 0x23B4, 0x23B5, 0x23B6, 0x302E, 0x302F])


@functools.cache
def _fast_path_unsafe() -> tuple[re.Pattern[str], re.Pattern[str]]:
  """Regexes for characters where `tokenizers` may differ from TF1.

  The Rust normaliser and pre-tokeniser carry their own Unicode tables, older
  than Python's for punctuation and accents (about Unicode 8), and their own
  CJK list. A character is safe when Python's Unicode database knows it and
  gives it the role (whitespace, control, punctuation, accent, other) it had
  in Unicode 3.2, so that every table in between agrees; or when it is a
  letter, number or symbol added since (both sides leave it inside a word).
  Excluded besides: private use, capital sigma (Python lower-cases a final
  sigma to "ς", Rust per character to "σ") and CJK Extension E (the Rust list
  omits part of it). tests/test_tokenization.py checks every safe character
  through both paths.

  Returns (unsafe BMP character or any astral one, unsafe astral character):
  `re` tests a BMP class as one bitmap but astral ranges one by one, so the
  second, slow pattern only sees the few astral characters of a text.
  """
  old = unicodedata.ucd_3_2_0
  unsafe: list[list[int]] = []
  for cp in range(sys.maxunicode + 1):
    char = chr(cp)
    cat = unicodedata.category(char)
    before = old.category(char)
    if cat in ("Cn", "Co", "Cs") or cp == 0x3A3 or 0x2B820 <= cp <= 0x2CEAF:
      safe = False
    elif before == "Cn":
      safe = cat[0] in "LNS"
    else:
      safe = (_rule_role(before) == _rule_role(cat)
              or cp in _ROLE_CHANGED_BUT_AGREED)
    if not safe:
      if unsafe and unsafe[-1][1] == cp - 1:
        unsafe[-1][1] = cp
      else:
        unsafe.append([cp, cp])

  def char_class(ranges: list[list[int]]) -> str:
    return "".join(re.escape(chr(a)) if a == b else
                   f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)

  bmp = [[a, min(b, 0xFFFF)] for a, b in unsafe if a <= 0xFFFF]
  astral = [[max(a, 0x10000), b] for a, b in unsafe if b > 0xFFFF]
  return (re.compile(f"[{char_class(bmp)}\U00010000-\U0010ffff]"),
          re.compile(f"[{char_class(astral)}]"))


# ASCII text: the characters TF1's clean-up deletes (controls that are not
# whitespace), and its words (alphanumeric runs and single punctuation).
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")
_WORD_CACHE_SIZE = 1 << 18  # distinct words memoised (~40 MB), then reset


def fast_path_accepts(text: str) -> bool:
  """Whether `tokenizers` provably tokenizes `text` exactly like TF1."""
  if text.isascii():
    return True
  unsafe_or_astral, unsafe_astral = _fast_path_unsafe()
  for match in unsafe_or_astral.finditer(text):
    char = match.group()
    if ord(char) <= 0xFFFF or unsafe_astral.match(char):
      return False
  return True


class FullTokenizer(_TokenizerBase):
  """BasicTokenizer + WordpieceTokenizer over a `vocab.txt`."""

  def __init__(self, vocab_file: str, do_lower_case: bool = True):
    self.vocab_file = vocab_file
    tokens = read_vocab(vocab_file)
    # A repeated token maps to its last line (TF1), yet every id still names
    # its own line, so ids from any source convert back.
    self.vocab = {t: i for i, t in enumerate(tokens)}
    self.inv_vocab = dict(enumerate(tokens))
    if "[UNK]" not in self.vocab:
      raise ValueError(f"{vocab_file}: the vocab has no [UNK] token (is it a "
                       "WordPiece vocab.txt, one token per line?)")
    self.do_lower_case = do_lower_case
    self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
    self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
    self._fast = None
    self._word_ids: dict[str, list[int]] = {}
    self._word_pieces: dict[str, list[str]] = {}

  def tokenize(self, text: str | bytes) -> list[str]:
    return [piece
            for token in self.basic_tokenizer.tokenize(text)
            for piece in self.wordpiece_tokenizer.tokenize(token)]

  def is_continuation(self, token: str) -> bool:
    """True for a piece that continues a word (whole-word masking)."""
    return token.startswith("##")

  def _fast_tokenizer(self):
    if self._fast is None:
      import tokenizers  # pylint: disable=g-import-not-at-top
      tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(
          dict(self.vocab), unk_token="[UNK]",
          max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
      tok.normalizer = tokenizers.normalizers.BertNormalizer(
          clean_text=True, handle_chinese_chars=True,
          strip_accents=self.do_lower_case, lowercase=self.do_lower_case)
      tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
      self._fast = tok
    return self._fast

  def _batch(self, texts: Sequence[str | bytes], ids: bool) -> list[list]:
    texts = [convert_to_unicode(t) for t in texts]
    out: list[list | None] = [None] * len(texts)
    fast_idx = []
    for i, text in enumerate(texts):
      if text.isascii():
        out[i] = self._ascii(text, ids)
      elif fast_path_accepts(text):
        fast_idx.append(i)
      else:
        tokens = self.tokenize(text)
        out[i] = self.convert_tokens_to_ids(tokens) if ids else tokens
    if fast_idx:
      encodings = self._fast_tokenizer().encode_batch(
          [texts[i] for i in fast_idx], add_special_tokens=False)
      for i, enc in zip(fast_idx, encodings):
        out[i] = enc.ids if ids else enc.tokens
    return out  # pytype: disable=bad-return-type

  def _ascii(self, text: str, ids: bool) -> list:
    """`tokenize` of ASCII text: the basic step as two regular expressions,
    WordPiece once per distinct word (memoised).

    On ASCII, TF1's clean-up only deletes the C0 controls other than tab,
    newline and carriage return (and DEL), accents and CJK do not occur, and
    every printable non-alphanumeric character is punctuation. Corpus text
    is mostly ASCII with a Zipfian vocabulary, so this is 2-3x faster per
    core than `tokenizers`, whose normaliser dominates its time.
    """
    text = _ASCII_CONTROL.sub("", text)
    if self.do_lower_case:
      text = text.lower()
    cache = self._word_ids if ids else self._word_pieces
    if len(cache) > _WORD_CACHE_SIZE:
      cache.clear()
    out: list = []
    for word in _ASCII_WORD.findall(text):
      pieces = cache.get(word)
      if pieces is None:
        pieces = self.wordpiece_tokenizer.tokenize(word)
        if ids:
          pieces = self.convert_tokens_to_ids(pieces)
        cache[word] = pieces
      out += pieces
    return out

  def tokenize_batch(self, texts: Sequence[str | bytes]) -> list[list[str]]:
    """Same as [tokenize(t) for t in texts], through `tokenizers`.

    Texts with a character outside `fast_path_accepts` take the exact
    Python path, so the result never depends on the route.
    """
    return self._batch(texts, ids=False)

  def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]:
    """Token ids of each text (no specials), fast; equal to the slow path."""
    return self._batch(texts, ids=True)


def preprocess_for_sentencepiece(text: str | bytes, do_lower_case: bool) -> str:
  """What the text goes through before SentencePiece, in training and use.

  SentencePiece's own NFKC normalisation follows; lower-casing is ours so a
  cased model can be trained from the same files.
  """
  text = convert_to_unicode(text)
  return text.lower() if do_lower_case else text


class SentencePieceTokenizer(_TokenizerBase):
  """A SentencePiece model used as BERT's vocabulary.

  The model must define [PAD] [UNK] [CLS] [SEP] [MASK] as pieces (build_vocab
  trains it so: [PAD]=0, [UNK]=1, the others as control symbols, which text
  can never produce). Pieces that start a word carry the '▁' prefix.
  """

  def __init__(self, model_file: str, do_lower_case: bool = True):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(model_file):
      raise FileNotFoundError(f"sentencepiece model not found: {model_file}")
    self.vocab_file = model_file
    try:
      self.sp = spm.SentencePieceProcessor(model_file=model_file)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"{model_file}: not a sentencepiece model ({e})"
                       ) from e
    self.do_lower_case = do_lower_case
    self.inv_vocab = {i: self.sp.id_to_piece(i)
                      for i in range(self.sp.get_piece_size())}
    self.vocab = {p: i for i, p in self.inv_vocab.items()}
    missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
    if missing:
      raise ValueError(f"{model_file}: the sentencepiece model lacks the "
                       f"special pieces {missing} (train it with "
                       "bert_jax.build_vocab --model=sentencepiece)")

  def tokenize(self, text: str | bytes) -> list[str]:
    return self.sp.encode(
        preprocess_for_sentencepiece(text, self.do_lower_case), out_type=str)

  def tokenize_batch(self, texts: Sequence[str | bytes]) -> list[list[str]]:
    return self.sp.encode(
        [preprocess_for_sentencepiece(t, self.do_lower_case) for t in texts],
        out_type=str)

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    # Like SentencePiece itself: a piece it does not know is [UNK].
    unk = self.vocab["[UNK]"]
    return [self.vocab.get(t, unk) for t in tokens]

  def is_continuation(self, token: str) -> bool:
    """True unless the piece starts a word.

    As in ALBERT's whole-word masking, a piece of punctuation starts a word
    of its own (WordPiece splits punctuation off too), and so does a special
    token.
    """
    if token.startswith(SENTENCEPIECE_WORD_START) or token in SPECIAL_TOKENS:
      return False
    return not all(_is_punctuation(c) for c in token)


def create_tokenizer(vocab_file: str, do_lower_case: bool = True
                     ) -> FullTokenizer | SentencePieceTokenizer:
  """A SentencePieceTokenizer for a `.model` file, else a FullTokenizer."""
  if vocab_file.endswith(".model"):
    return SentencePieceTokenizer(vocab_file, do_lower_case)
  return FullTokenizer(vocab_file, do_lower_case)
