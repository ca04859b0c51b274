"""CoNLL-2003 NER, Table 7's feature-based NER and Table 5's BiLSTM."""

import functools
import inspect
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bert_jax import finetune
from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax import pretrained
from bert_jax import tokenization
from bert_jax import train
from bert_jax.tasks import base as tasks_base
from bert_jax.tasks import ner
from configs import finetune as finetune_configs
from tests import test_finetune

# Synthetic entity words; some split into several WordPiece pieces.
ENTITIES = {
    "PER": ("john", "mary", "smith", "jones", "ekeus"),
    "ORG": ("acme", "reuters", "union", "un"),
    "LOC": ("paris", "london", "rome", "baghdad", "germany"),
    "MISC": ("french", "german", "olympic"),
}
FILLER = ("the", "a", "of", "and", "said", "went", "to", "in", "met",
          "rejects", "call", "on", "day", "official", "heads", "for", ".")
PIECES = ("lon", "##don", "ro", "##me", "ek", "##eus", "reject", "##s",
          "bag", "##hdad")


def write_vocab(path):
  """A WordPiece vocabulary for the synthetic NER and SST-2 words."""
  words = {w for ws in ENTITIES.values() for w in ws} | set(FILLER)
  words |= set(test_finetune.POSITIVE + test_finetune.NEGATIVE
               + test_finetune.FILLER)
  words -= {"london", "rome", "ekeus", "rejects", "baghdad"}  # pieces only
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words),
            *PIECES]
  path.write_text("\n".join(tokens) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
  """A freshly initialised 2-layer, 32-wide encoder saved as a bert_jax
  export."""
  d = tmp_path_factory.mktemp("ner_encoder")
  vocab = write_vocab(d / "vocab.txt")
  size = len(open(vocab).read().split())
  cfg = model_lib.BertConfig(vocab_size=size, hidden_size=32, num_layers=2,
                             num_heads=2, intermediate_size=64,
                             max_position_embeddings=64)
  params = pretrained.init_params(cfg, seed=1, nsp=False)
  return pretrained.save_bert_jax(cfg, params, vocab, str(d / "model"))


def conll_sentence(rng):
  """Words and IOB1 tags: entities among filler words; two entities of one
  type that touch get B- on the second, as in CoNLL-2003."""
  words, tags = [], []
  last = None
  for _ in range(rng.randint(2, 9)):
    if rng.random() < 0.4:
      kind = rng.choice(sorted(ENTITIES))
      n = rng.randint(1, 2)
      for i in range(n):
        words.append(rng.choice(ENTITIES[kind]).capitalize())
        tags.append(("B-" if i == 0 and last == kind else "I-") + kind)
      last = kind
    else:
      words.append(rng.choice(FILLER))
      tags.append("O")
      last = None
  return words, tags


def write_conll(directory, n_train=240, n_dev=40, n_test=24, seed=0,
                sentences_per_doc=6):
  """train.txt / valid.txt / test.txt in CoNLL-2003's exact layout."""
  rng = random.Random(seed)
  os.makedirs(directory, exist_ok=True)
  for name, n in (("train", n_train), ("valid", n_dev), ("test", n_test)):
    if not n:
      continue
    with open(os.path.join(directory, f"{name}.txt"), "w") as f:
      for i in range(n):
        if i % sentences_per_doc == 0:
          f.write("-DOCSTART- -X- -X- O\n\n")
        words, tags = conll_sentence(rng)
        for w, t in zip(words, tags):
          f.write(f"{w} NNP I-NP {t}\n")
        f.write("\n")
  return str(directory)


def ner_config(encoder, data, arg="conll2003", **overrides):
  c = finetune_configs.get_config(arg)
  c.unlock()
  c.init_checkpoint = encoder
  c.data_dir = data
  c.max_seq_length = 32
  c.train_batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 2e-3
  c.num_train_epochs = 4.0
  c.log_every_steps = 20
  c.save_checkpoints_steps = 1000
  c.lstm_units = 16
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  c.update_from_flattened_dict(overrides)
  c.lock()
  return c


# -- the reader --------------------------------------------------------------

CONLL_FILE = """\
-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O

"""


def test_reader_reads_columns_sentences_and_documents(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text(CONLL_FILE)
  sentences = ner.read_conll(str(path), ner.CONLL2003_LABELS)
  assert [s.words for s in sentences] == [
      ["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"],
      ["BRUSSELS", "1996-08-22"]]
  assert [s.tags for s in sentences] == [
      ["I-ORG", "O", "I-MISC", "O", "O"], ["I-PER", "I-PER"],
      ["I-LOC", "O"]]
  assert [s.document for s in sentences] == [0, 0, 1]
  assert [s.line for s in sentences] == [3, 9, 14]
  # No blank line at the end of the file, no DOCSTART: still read.
  path.write_text("A DT B-NP O\nB NNP I-NP B-PER")
  assert ner.read_conll(str(path), ner.CONLL2003_LABELS)[0].tags == [
      "O", "B-PER"]
  # A tag outside the label set, or a line without one: file and line.
  path.write_text(CONLL_FILE.replace("I-MISC", "I-MSC"))
  with pytest.raises(ValueError, match=r"train.txt:5: label 'I-MSC'"):
    ner.read_conll(str(path), ner.CONLL2003_LABELS)
  path.write_text(CONLL_FILE.replace("call NN I-NP O", "call"))
  with pytest.raises(ValueError, match=r"train.txt:6: expected 'WORD"):
    ner.read_conll(str(path), ner.CONLL2003_LABELS)


def test_first_sub_token_labels_hand_computed(tmp_path):
  vocab = write_vocab(tmp_path / "vocab.txt")
  tok = tokenization.create_tokenizer(vocab, True)
  path = tmp_path / "train.txt"
  path.write_text("Rome NNP I-NP I-LOC\nrejects VBZ I-VP O\n"
                  "London NNP I-NP B-LOC\n. . O O\n\n")
  sentences = ner.read_conll(str(path), ner.CONLL2003_LABELS)
  windows = ner.make_windows(ner.word_pieces(tok, sentences), sentences,
                             16, False)
  labels = {t: i for i, t in enumerate(ner.CONLL2003_LABELS)}
  f = ner.window_features(windows, sentences, labels, 16,
                          tok.vocab["[CLS]"], tok.vocab["[SEP]"])
  # [CLS] ro ##me reject ##s lon ##don . [SEP]: words start at 1, 3, 5, 7.
  expected = ["[CLS]", "ro", "##me", "reject", "##s", "lon", "##don", ".",
              "[SEP]"]
  assert tok.convert_ids_to_tokens(f["input_ids"][0, :9]) == expected
  assert not f["input_ids"][0, 9:].any()
  np.testing.assert_array_equal(f["input_mask"][0], [1] * 9 + [0] * 7)
  weights = np.zeros(16, np.float32)
  weights[[1, 3, 5, 7]] = 1
  np.testing.assert_array_equal(f["label_weights"][0], weights)
  ids = np.zeros(16, np.int32)
  ids[[1, 3, 5, 7]] = [labels["I-LOC"], labels["O"], labels["B-LOC"],
                       labels["O"]]
  np.testing.assert_array_equal(f["label_ids"][0], ids)
  # A prediction read back at the first pieces gives each word its tag.
  predicted = ner.word_predictions(windows, sentences, f["label_ids"],
                                   ner.CONLL2003_LABELS)
  assert predicted == [["I-LOC", "O", "B-LOC", "O"]]


def test_windows_with_and_without_document_context_hand_computed():
  """max_seq_length 8: 6 pieces between [CLS] and [SEP]."""
  def sent(doc, n):
    return ner.Sentence("x", ["w"] * n, ["O"] * n, doc, 1)

  pieces = [[[10], [11], [12]], [[20, 21], [22]], [[30], [31], [32], [33]],
            [[40 + i] for i in range(8)]]
  sentences = [sent(0, 3), sent(0, 2), sent(0, 4), sent(1, 8)]
  alone = ner.make_windows(pieces, sentences, 8, False)
  context = ner.make_windows(pieces, sentences, 8, True)
  as_tuples = lambda ws: [(w.sentence, w.piece_ids, w.words, w.positions)
                          for w in ws]
  # The 8-word sentence is cut after 6 words; its second window takes the
  # sentence's own preceding words as context (never another document's).
  long_windows = [(3, [40, 41, 42, 43, 44, 45], [0, 1, 2, 3, 4, 5],
                   [1, 2, 3, 4, 5, 6]),
                  (3, [42, 43, 44, 45, 46, 47], [6, 7], [5, 6])]
  assert as_tuples(alone) == [
      (0, [10, 11, 12], [0, 1, 2], [1, 2, 3]),
      (1, [20, 21, 22], [0, 1], [1, 3]),
      (2, [30, 31, 32, 33], [0, 1, 2, 3], [1, 2, 3, 4]),
      *long_windows]
  # Document context: the room left is shared out on both sides.
  assert as_tuples(context) == [
      (0, [10, 11, 12, 20, 21, 22], [0, 1, 2], [1, 2, 3]),
      (1, [12, 20, 21, 22, 30, 31], [0, 1], [2, 4]),
      (2, [21, 22, 30, 31, 32, 33], [0, 1, 2, 3], [3, 4, 5, 6]),
      *long_windows]


# -- the metric --------------------------------------------------------------

def conlleval_counts(gold, predicted):
  """A literal port of conlleval's (CoNLL-2000 Perl script) chunk counting:
  (correct chunks, gold chunks, guessed chunks, correct tags, tokens)."""
  def split(tag):
    return (tag, "") if tag == "O" else tuple(tag.split("-", 1))

  def end_of_chunk(prev_tag, tag, prev_type, type_):
    end = ((prev_tag, tag) in {("B", "B"), ("B", "O"), ("I", "B"),
                               ("I", "O")})
    if prev_tag not in ("O", ".") and prev_type != type_:
      end = True
    return end

  def start_of_chunk(prev_tag, tag, prev_type, type_):
    start = ((prev_tag, tag) in {("B", "B"), ("I", "B"), ("O", "B"),
                                 ("O", "I")})
    if tag not in ("O", ".") and prev_type != type_:
      start = True
    return start

  correct_chunk = found_correct = found_guessed = correct_tags = tokens = 0
  in_correct = False
  last_c, last_g, last_ct, last_gt = "O", "O", "", ""
  # Sentence boundaries are lines whose tags read as O (not counted).
  rows = []
  for g_sent, p_sent in zip(gold, predicted):
    rows += [(g, p, True) for g, p in zip(g_sent, p_sent)]
    rows.append(("O", "O", False))
  for g, p, is_token in rows:
    c_tag, c_type = split(g)
    g_tag, g_type = split(p)
    if in_correct:
      c_end = end_of_chunk(last_c, c_tag, last_ct, c_type)
      g_end = end_of_chunk(last_g, g_tag, last_gt, g_type)
      if c_end and g_end and last_gt == last_ct:
        in_correct = False
        correct_chunk += 1
      elif c_end != g_end or g_type != c_type:
        in_correct = False
    c_start = start_of_chunk(last_c, c_tag, last_ct, c_type)
    g_start = start_of_chunk(last_g, g_tag, last_gt, g_type)
    if c_start and g_start and g_type == c_type:
      in_correct = True
    found_correct += c_start
    found_guessed += g_start
    if is_token:
      correct_tags += g == p
      tokens += 1
    last_c, last_g, last_ct, last_gt = c_tag, g_tag, c_type, g_type
  if in_correct:
    correct_chunk += 1
  return correct_chunk, found_correct, found_guessed, correct_tags, tokens


def assert_conlleval_printed(gold, guess, counts, percentages):
  """conlleval's printout, `counts` (correct, gold, found phrases; correct
  tags, tokens) and `percentages` (accuracy, precision, recall, FB1): the
  port counts the same and entity_scores gives the same fractions."""
  assert conlleval_counts(gold, guess) == counts
  correct, n_gold, n_guess, right, tokens = counts
  m = ner.entity_scores(gold, guess)
  np.testing.assert_allclose(m["eval_precision"], correct / n_guess)
  np.testing.assert_allclose(m["eval_recall"], correct / n_gold)
  np.testing.assert_allclose(m["eval_f1"], 2 * correct / (n_guess + n_gold))
  np.testing.assert_allclose(m["eval_accuracy"], right / tokens)
  assert [round(100 * m[k], 2) for k in ("eval_accuracy", "eval_precision",
                                         "eval_recall", "eval_f1")] == (
                                             percentages)


def test_entity_scores_match_conlleval_by_hand_and_seqeval():
  # A known file in IOB1 (CoNLL-2003's scheme), counted by hand:
  # gold chunks: U.N. (ORG), Ekeus (PER), Baghdad (LOC); Germany (LOC),
  # European Union (ORG); John Smith (PER), Mary Jones (PER, B- because
  # it touches the first) = 7. Guessed: U.N., Ekeus, Baghdad as PER;
  # Germany, "European" alone; one 4-word PER = 6. Correct: U.N., Ekeus,
  # Germany = 3. conlleval.pl printed (run on this file, 2026-12-05):
  # processed 19 tokens with 7 phrases; found: 6 phrases; correct: 3.
  # accuracy: 84.21%; precision: 50.00%; recall: 42.86%; FB1: 46.15.
  gold = [["I-ORG", "O", "I-PER", "O", "O", "I-LOC", "O"],
          ["I-LOC", "O", "O", "O", "O", "I-ORG", "I-ORG"],
          ["I-PER", "I-PER", "B-PER", "I-PER", "O"]]
  guess = [["I-ORG", "O", "I-PER", "O", "O", "I-PER", "O"],
           ["I-LOC", "O", "O", "O", "O", "I-ORG", "O"],
           ["I-PER", "I-PER", "I-PER", "I-PER", "O"]]
  assert_conlleval_printed(gold, guess, (3, 7, 6, 16, 19),
                           [84.21, 50.0, 42.86, 46.15])

  # Random IOB1 / IOB2 / ill-formed sequences: the conlleval port and
  # seqeval agree with what we report.
  from seqeval import metrics as seqeval_metrics  # pylint: disable=g-import-not-at-top
  rng = random.Random(3)
  tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
  for _ in range(20):
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))]
            for _ in range(rng.randint(1, 6))]
    guess = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s]
             for s in gold]
    correct, n_gold, n_guess, right, tokens = conlleval_counts(gold, guess)
    m = ner.entity_scores(gold, guess)
    p = correct / n_guess if n_guess else 0.0
    r = correct / n_gold if n_gold else 0.0
    np.testing.assert_allclose(m["eval_precision"], p)
    np.testing.assert_allclose(m["eval_recall"], r)
    np.testing.assert_allclose(m["eval_f1"],
                               2 * p * r / (p + r) if p + r else 0.0)
    np.testing.assert_allclose(m["eval_accuracy"], right / tokens)
    np.testing.assert_allclose(
        m["eval_f1"], seqeval_metrics.f1_score(gold, guess, zero_division=0))


CONLLEVAL_DATA = os.path.join(os.path.dirname(__file__), "testdata",
                              "conlleval")


def test_entity_scores_match_conlleval_published_output(tmp_path):
  # The CoNLL-2000 example output's first 961 tokens, whose conlleval
  # output is published (testdata/conlleval/README.md): processed 961
  # tokens with 459 phrases; found: 539 phrases; correct: 371. accuracy:
  # 84.08%; precision: 68.83%; recall: 80.83%; FB1: 74.35. Its guesses
  # open chunks with I- after O and at sentence starts, which conlleval
  # counts as chunk starts.
  with open(os.path.join(CONLLEVAL_DATA,
                         "conll2000-example-output.tags")) as f:
    rows = [[t.partition("/") for t in line.split()] for line in f]
  sentences = [ner.Sentence(f"dev-{i}", ["w"] * len(r), [g for g, _, _ in r],
                            0, 0) for i, r in enumerate(rows)]
  guesses = [[p or g for g, _, p in r] for r in rows]
  # Through the predictions file the task writes for conlleval, read back
  # as conlleval reads it: the last two columns, sentences at blank lines.
  path = ner.write_conll_predictions(str(tmp_path / "out" / "dev.txt"),
                                     sentences, guesses)
  gold, guess = [[]], [[]]
  with open(path) as f:
    for line in f:
      fields = line.split()
      if not fields:
        gold.append([])
        guess.append([])
        continue
      gold[-1].append(fields[-2])
      guess[-1].append(fields[-1])
  gold, guess = gold[:-1], guess[:-1]
  assert len(gold) == 40 and sum(map(len, gold)) == 961

  assert_conlleval_printed(gold, guess, (371, 459, 539, 808, 961),
                           [84.08, 68.83, 80.83, 74.35])


# -- the heads: BiLSTM and Table 7's features --------------------------------

def _tiny_config(**kw):
  return model_lib.BertConfig(**{
      "vocab_size": 64, "hidden_size": 32, "num_layers": 4, "num_heads": 2,
      "intermediate_size": 64, "max_position_embeddings": 32,
      "hidden_dropout_prob": 0.0, "attention_dropout_prob": 0.0, **kw})


def test_feature_combinations_match_their_formulas():
  cfg = _tiny_config()
  ids = np.array([[2, 7, 8, 9, 3, 0], [2, 7, 8, 3, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  # Table 7 on BERT-Base's 12 layers: hidden_states[0] is the embeddings.
  assert heads.feature_layers("embeddings", 12) == [0]
  assert heads.feature_layers("second_to_last", 12) == [11]
  assert heads.feature_layers("last", 12) == [12]
  assert heads.feature_layers("sum_last4", 12) == [9, 10, 11, 12]
  assert heads.feature_layers("concat_last4", 12) == [9, 10, 11, 12]
  assert heads.feature_layers("sum_all", 12) == list(range(1, 13))
  with pytest.raises(ValueError, match="at least 4 layers"):
    heads.feature_layers("concat_last4", 3)
  model = heads.BertForTokenClassification(cfg, 5, features="sum_all",
                                           lstm_units=8, rngs=nnx.Rngs(0))
  # Learned, softmax-normalised scalar weights (zeros at first: the mean).
  assert not np.any(model.layer_weights[...])
  model.layer_weights[...] = jnp.asarray([0.3, -1.0, 2.0, 0.1])
  out = model.bert(ids, 0 * ids, mask, output_hidden_states=True)
  h = np.asarray(out.hidden_states)  # [5, B, L, 32]: embeddings, 4 layers
  np.testing.assert_allclose(h[-1], out.sequence_output, atol=1e-6)
  w = np.exp([0.3, -1.0, 2.0, 0.1]) / np.exp([0.3, -1.0, 2.0, 0.1]).sum()
  w4 = np.asarray([0.5, -0.2, 0.0, 1.0])
  expected = {
      "embeddings": h[0], "second_to_last": h[3], "last": h[4],
      "sum_last4": np.einsum("n,nbld->bld",
                             np.exp(w4) / np.exp(w4).sum(), h[1:5]),
      "concat_last4": np.concatenate([h[1], h[2], h[3], h[4]], -1),
      "sum_all": np.einsum("n,nbld->bld", w, h[1:5]),
  }
  for features, want in expected.items():
    got = heads.combine_features(
        jnp.asarray(h), features,
        jnp.asarray(w4 if features == "sum_last4" else
                    [0.3, -1.0, 2.0, 0.1]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                               err_msg=features)
  # The model feeds its BiLSTM exactly that; no gradient reaches the
  # frozen encoder, the scalar mix and the head learn.
  np.testing.assert_allclose(model.encode(ids, 0 * ids, mask),
                             expected["sum_all"], rtol=1e-5, atol=1e-5)
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(
      ids, 0 * ids, mask) ** 2)))(params)
  grads = nnx.to_pure_dict(grads)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["bert"]))
  assert np.any(grads["layer_weights"]) and np.any(
      grads["classifier"]["kernel"])


def test_bilstm_reads_only_real_tokens_and_heads_take_it():
  lstm = heads.BiLSTM(32, 8, 2, rngs=nnx.Rngs(0))
  run = _jitted(lstm)
  x = np.random.default_rng(0).normal(size=(2, 7, 32)).astype(np.float32)
  mask = np.array([[1] * 5 + [0] * 2, [1] * 3 + [0] * 4], np.int32)
  out = np.asarray(run(x, mask))
  assert out.shape == (2, 7, 16)
  # Padding is invisible at real positions: other padding values, or a
  # row of its own length, give the same outputs.
  y = x.copy()
  y[mask == 0] = 100.0
  np.testing.assert_allclose(run(y, mask)[mask == 1], out[mask == 1],
                             atol=1e-6)
  alone = np.asarray(run(x[1:, :3], mask[1:, :3]))[0]
  np.testing.assert_allclose(alone, out[1, :3], atol=1e-6)
  # One layer: the backward direction at position 0 has read the last real
  # token, the forward one before it has not.
  one = heads.BiLSTM(32, 8, 1, rngs=nnx.Rngs(0))
  z = x.copy()
  z[0, 4] += 1.0
  run_one = _jitted(one)
  before, after = np.asarray(run_one(x, mask)), np.asarray(run_one(z, mask))
  assert not np.allclose(after[0, 0, 8:], before[0, 0, 8:])
  np.testing.assert_allclose(after[0, :4, :8], before[0, :4, :8], atol=1e-6)
  pooled = heads.final_states(jnp.asarray(out), jnp.asarray(mask))
  np.testing.assert_allclose(
      pooled, np.stack([np.concatenate([out[0, 4, :8], out[0, 0, 8:]]),
                        np.concatenate([out[1, 2, :8], out[1, 0, 8:]])]))
  # Each fine-tuning head takes bilstm=True (off by default) and puts the
  # BiLSTM between the encoder and its output layer.
  for cls in (heads.BertForSequenceClassification,
              heads.BertForTokenClassification,
              heads.BertForQuestionAnswering):
    assert inspect.signature(cls.__init__).parameters["bilstm"].default is False
  cfg = _tiny_config(num_layers=1)
  ids = np.array([[2, 7, 8, 9, 3, 0], [2, 7, 8, 3, 0, 0]], np.int32)
  m = (ids > 0).astype(np.int32)
  qa = heads.BertForQuestionAnswering(cfg, bilstm=True, lstm_units=8,
                                      rngs=nnx.Rngs(0))

  def both(model, ids, m):
    seq = model.bert(ids, 0 * ids, m).sequence_output
    return model(ids, 0 * ids, m), model.qa_outputs(model.lstm(seq, m))

  (start, end), expected = _jitted(qa, both)(ids, m)
  np.testing.assert_allclose(start, expected[..., 0], atol=1e-6)
  np.testing.assert_allclose(end, expected[..., 1], atol=1e-6)


def _jitted(module, fn=None):
  """fn(module, *args) (default: module(*args)) as a jitted function of
  args, the module's state passed in (flax's RNN cannot close over
  concrete parameters under jit)."""
  graphdef, state = nnx.split(module)
  fn = fn or (lambda mod, *a: mod(*a))
  call = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
  return functools.partial(call, state)


def test_freeze_leaves_a_subtree_bitwise_and_keeps_no_state_for_it():
  from bert_jax import optimizer  # pylint: disable=g-import-not-at-top
  params = {"bert": {"kernel": np.full((3, 2), -0.5, np.float32),
                     "bias": np.ones(2, np.float32)},
            "classifier": {"kernel": np.full((2, 2), 0.5, np.float32)}}
  grads = jax.tree.map(np.ones_like, params)  # even with gradients
  tx = optimizer.freeze(optimizer.create_optimizer(
      "adamw", lambda _: 0.1, weight_decay=0.5), ["bert"])
  state = tx.init(params)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(
      state)]
  assert any("classifier" in p for p in paths)
  assert not any("bert" in p for p in paths)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert params["bert"]["kernel"].tobytes() == np.full(
      (3, 2), -0.5, np.float32).tobytes()
  assert np.all(np.asarray(params["bert"]["bias"]) == 1)
  assert not np.any(np.asarray(params["classifier"]["kernel"]) == 0.5)
  # The trainer shards the state against the trained part of the params.
  shapes = optax.tree_map_params(
      tx, lambda _, p: p.shape, state,
      optimizer.trained_part(params, ["bert"]))
  assert jax.tree.leaves(shapes)


# -- the task end to end -----------------------------------------------------

def _restored_params(config, workdir, task):
  mesh = train.make_mesh(config)
  fns = train.make_train_step(config, mesh, task=task)
  _, state, _ = train.checkpoints.Checkpointer(
      os.path.join(workdir, "checkpoints")).restore_latest(fns.abstract_state)
  return fns, mesh, state["params"]


def test_ner_finetune_learns_and_matches_transformers(encoder_dir, tmp_path):
  data = write_conll(tmp_path / "conll")
  workdir = str(tmp_path / "ft")
  config = ner_config(encoder_dir, data, document_context=True)
  results = train.train_and_evaluate(config, workdir)
  assert results["task"] == "conll2003"
  assert results["steps"] == int(240 / 16 * 4)  # sentences, as TF1 counts
  assert "token classifier (9 labels) freshly initialised" in results["init"]
  # Chance is an F1 near 0 (4 types x 2 tags x 1-2 words); the words decide.
  assert results["eval_f1"] > 0.8, results
  assert results["eval_test_f1"] > 0.8, results
  assert {"eval_precision", "eval_recall", "eval_accuracy", "eval_loss",
          "eval_test_accuracy"} <= set(results)
  # conlleval's input: WORD GOLD PREDICTED, a blank line after sentences;
  # scoring it with the conlleval port gives the reported F1.
  text = open(results["predictions"]["dev"]).read()
  sentences = [s.splitlines() for s in text.strip("\n").split("\n\n")]
  assert len(sentences) == 40
  gold = [[line.split()[1] for line in s] for s in sentences]
  guess = [[line.split()[2] for line in s] for s in sentences]
  correct, n_gold, n_guess, _, _ = conlleval_counts(gold, guess)
  np.testing.assert_allclose(results["eval_f1"],
                             2 * correct / (n_gold + n_guess))

  # The export, read by transformers' BertForTokenClassification, gives
  # our logits on a padded batch (the restored final state).
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_dir = results["checkpoints"]["hf"]
  hf = transformers.BertForTokenClassification.from_pretrained(hf_dir).eval()
  assert hf.config.id2label[3] == "B-ORG"
  task = train.tasks.from_config(config)
  task.prepare(workdir)
  fns, mesh, params = _restored_params(config, workdir, task)
  split = task.evals[0]
  # Document context fills every window: add padding columns.
  feats = {k: np.pad(v[:12], ((0, 0), (0, 8)))
           for k, v in split.features.items()}
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(feats["input_ids"], dtype=torch.long),
                attention_mask=torch.tensor(feats["input_mask"],
                                            dtype=torch.long),
                token_type_ids=torch.tensor(feats["segment_ids"],
                                            dtype=torch.long)).logits.numpy()
  with train.sharding.activation_rules(mesh, train.rules_of(config)):
    ours = np.asarray(jax.jit(lambda p, b: task._logits(  # pylint: disable=protected-access
        train.nnx.merge(fns.graphdef, p), b, None))(params, feats))
  real = feats["input_mask"] == 1
  assert real.sum() < real.size  # the batch is padded
  np.testing.assert_allclose(ours[real], theirs[real], atol=2e-5)


@pytest.mark.slow
def test_feature_based_keeps_the_encoder_bitwise_frozen_and_learns(
    encoder_dir, tmp_path):
  data = write_conll(tmp_path / "conll", n_test=0)
  workdir = str(tmp_path / "fb")
  # A BiLSTM learning from scratch: more steps (cheap once compiled).
  config = ner_config(encoder_dir, data, "task=conll2003,features=sum_all",
                      learning_rate=3e-2, lstm_units=32,
                      num_train_epochs=10.0, log_every_steps=50)
  assert config.lstm_layers == 2  # the paper's two-layer BiLSTM
  results = train.train_and_evaluate(config, workdir)
  assert results["eval_f1"] > 0.8, results
  assert "encoder frozen, features sum_all" in results["init"]
  assert "BiLSTM" in results["export_skipped"]
  task = train.tasks.from_config(config)
  task.prepare(workdir)
  _, _, params = _restored_params(config, workdir, task)
  start = finetune.load_encoder(config).params
  final = jax.tree.leaves_with_path(pretrained.jax_to_numpy(params["bert"]))
  assert len(final) > 10
  for path, value in final:
    ref = start
    for k in path:
      ref = ref[k.key]
    assert value.dtype == ref.dtype and value.tobytes() == ref.tobytes(), (
        jax.tree_util.keystr(path))
  # ... while the scalar mix learned.
  assert np.any(np.asarray(params["layer_weights"]) != 0)


@pytest.mark.slow
def test_glue_with_bilstm_learns_and_is_not_exported(encoder_dir, tmp_path):
  data = test_finetune.write_sst2(tmp_path / "SST-2")
  config = test_finetune.tiny_finetune_config(
      encoder_dir, data, task="task=sst2,bilstm=true", lstm_units=16,
      learning_rate=3e-3, log_every_steps=20, save_checkpoints_steps=1000)
  results = train.train_and_evaluate(config, str(tmp_path / "ft"))
  assert results["eval_accuracy"] > 0.8, results  # chance: 0.5
  assert "BiLSTM (1 layer(s), 16 units" in results["init"]
  assert "BiLSTM" in results["export_skipped"]
  assert "checkpoints" not in results


def test_bad_ner_input_names_file_line_or_key(encoder_dir, tmp_path):
  data = write_conll(tmp_path / "conll", n_train=20, n_dev=4, n_test=0)
  with open(os.path.join(data, "train.txt"), "a") as f:
    f.write("Paris NNP I-NP I-CITY\n")
  lines = open(os.path.join(data, "train.txt")).read().count("\n")
  with pytest.raises(tasks_base.ConfigError,
                     match=rf"train.txt:{lines}: label 'I-CITY'"):
    train.train_and_evaluate(ner_config(encoder_dir, data),
                             str(tmp_path / "w"))
  with pytest.raises(tasks_base.ConfigError, match="config.features"):
    train.train_and_evaluate(
        ner_config(encoder_dir, data, features="third_layer"),
        str(tmp_path / "w2"))


def test_feature_based_bilstm_of_the_encoders_width(encoder_dir, tmp_path):
  """lstm_units=0 means a BiLSTM as wide as the encoder (the small-scale
  Tables 7 and 8 ask for it): the run trains and reports that width; a
  negative width is a config error naming the key."""
  data = write_conll(tmp_path / "conll", n_train=32, n_dev=8, n_test=0)
  config = ner_config(encoder_dir, data, "task=conll2003,features=last",
                      lstm_units=0, num_train_epochs=1.0)
  results = train.train_and_evaluate(config, str(tmp_path / "w"))
  # encoder_dir's encoder is 32 wide.
  assert "BiLSTM (2 layer(s), 32 units a direction)" in results["init"]
  assert 0.0 <= results["eval_f1"] <= 1.0
  with pytest.raises(tasks_base.ConfigError, match="config.lstm_units=-1"):
    train.train_and_evaluate(
        ner_config(encoder_dir, data, "task=conll2003,features=last",
                   lstm_units=-1), str(tmp_path / "w2"))


def test_ner_configs():
  c = finetune_configs.get_config("task=conll2003,features=concat_last4")
  assert (c.task, c.features, c.lstm_units, c.lstm_layers) == (
      "conll2003", "concat_last4", 768, 2)
  assert not c.bilstm and not c.document_context
  c = finetune_configs.get_config("task=mnli,bilstm=true")
  assert c.bilstm and c.lstm_layers == 1
  assert not finetune_configs.get_config("mnli").bilstm
  with pytest.raises(ValueError, match="features"):
    finetune_configs.get_config("task=mnli,features=last")
  with pytest.raises(ValueError, match="true or false"):
    finetune_configs.get_config("task=mnli,bilstm=yes")
  json.dumps(c.to_dict())
