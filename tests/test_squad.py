"""SQuAD 1.1 / 2.0: reader, windows, decoding and metrics against a literal
port of the original (tests/squad_reference.py), the job end to end, and
the export against transformers' BertForQuestionAnswering."""

import json
import os
import random

import jax
import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax import train
from bert_jax.tasks import base
from bert_jax.tasks import squad
from configs import finetune as finetune_configs
from tests import squad_reference as ref
from tests import test_train

ROOT = test_train.ROOT
BERT_VOCAB = os.path.join(ROOT, "data/vocab/bert-base-uncased-vocab.txt")
CORPUS_VOCAB = os.path.join(ROOT, "data/vocab/corpus-wordpiece-8k.txt")

# Words that make WordPiece, the answer alignment and get_final_text work:
# punctuation glued to words, accents, a character sub-span of a word.
WORDS = ("the", "leader", "was", "John", "Smith's", "(1895-1943).", "in",
         "Japanese", "electronics", "industry", "is", "largest", "Héllo,",
         "naïve", "café!", "U.S.", "don't", "1,000", "of", "a", "river",
         "Paris", "population", "über-cool", "state-of-the-art", "x")
SPACES = (" ", " ", " ", "  ", "\t", "\n", "\u202f")


def squad_json(articles, version="1.1"):
  return {"version": version, "data": articles}


def write_json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, ensure_ascii=False)
  return str(path)


def random_articles(seed, n_paragraphs=8, v2=False, training=True):
  """Paragraphs of tricky words; answers at exact character offsets, some
  cut inside a word, a few whose offset points at other words (skipped in
  training), and for v2 impossible questions with plausible answers."""
  rng = random.Random(seed)
  paragraphs = []
  qid = 0
  for i in range(n_paragraphs):
    # One context runs far past max_seq_length: many windows.
    words = [rng.choice(WORDS) for _ in range(
        400 if i == 1 else rng.randint(5, 90))]
    context, starts = "", []
    for w in words:
      context += rng.choice(SPACES) if context else ""
      starts.append(len(context))
      context += w
    qas = []
    for _ in range(rng.randint(1, 4)):
      qid += 1
      question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
      a = rng.randrange(len(words))
      b = min(len(words) - 1, a + rng.randint(0, 3))
      start = starts[a]
      text = context[start:starts[b] + len(words[b])]
      kind = rng.random()
      if kind < 0.15 and len(words[a]) > 3:
        text = words[a][:len(words[a]) - 2]  # "Japan" of "Japanese"
      elif kind < 0.25:
        start = starts[(a + 2) % len(words)]  # points at other words
      answers = [{"text": text, "answer_start": start}]
      if not training:
        c = rng.randrange(len(words))
        answers.append({"text": words[c], "answer_start": starts[c]})
      qa = {"id": f"q{qid}", "question": question, "answers": answers}
      if v2:
        qa["is_impossible"] = rng.random() < 0.3
        if qa["is_impossible"]:
          qa["plausible_answers"] = qa["answers"][:1]
          qa["answers"] = []
      qas.append(qa)
    paragraphs.append({"context": context, "qas": qas})
  return [{"title": "t", "paragraphs": paragraphs[:4]},
          {"title": "u", "paragraphs": paragraphs[4:]}]


@pytest.fixture(scope="module")
def tokenizer():
  return tokenization.FullTokenizer(BERT_VOCAB, do_lower_case=True)


WINDOWS = dict(max_seq_length=64, doc_stride=20, max_query_length=10)


@pytest.mark.parametrize("v2", [False, True])
def test_reader_and_windows_equal_run_squad(tmp_path, tokenizer, v2):
  for training in (True, False):
    articles = random_articles(1 + v2, v2=v2, training=training)
    path = write_json(tmp_path / f"{training}.json",
                      squad_json(articles, "2.0" if v2 else "1.1"))
    ours = squad.read_squad(path, is_training=training,
                            version_2_with_negative=v2)
    theirs = ref.read_squad_examples(articles, training, v2)
    assert [e.qas_id for e in ours.examples] == [e.qas_id for e in theirs]
    n_questions = sum(len(p["qas"]) for a in articles
                      for p in a["paragraphs"])
    if training:
      # Unrecoverable answers are skipped and counted, as the original.
      assert ours.skipped["answer_not_found"] == n_questions - len(theirs) > 0
      for a, b in zip(ours.examples, theirs):
        assert a.doc_tokens == b.doc_tokens
        assert a.is_impossible == b.is_impossible
        if not b.is_impossible:
          assert (a.start_word, a.end_word, a.answer_text) == (
              b.start_position, b.end_position, b.orig_answer_text)
    else:
      assert len(ours.examples) == n_questions
      assert len(ours.gold) == n_questions

    feats = squad.make_features(ours.examples, tokenizer,
                                is_training=training, **WINDOWS)
    expected = ref.convert_examples_to_features(
        theirs, tokenizer, is_training=training, **WINDOWS)
    assert feats.num_features == len(expected)
    # Long contexts make several windows; some training windows miss the
    # answer and point at [CLS].
    assert len(expected) > len(theirs) + 10
    for f, g in enumerate(expected):
      assert feats.example_of[f] == g.example_index
      assert feats.tokens[f] == g.tokens
      for key in ("input_ids", "input_mask", "segment_ids"):
        np.testing.assert_array_equal(feats.arrays[key][f], getattr(g, key))
      if training:
        assert (feats.arrays["start_positions"][f],
                feats.arrays["end_positions"][f]) == (g.start_position,
                                                      g.end_position)
      to_word = {int(i): int(w) for i, w in
                 enumerate(feats.token_to_word[f]) if w >= 0}
      assert to_word == g.token_to_orig_map
      assert {i: bool(feats.max_context[f][i]) for i in to_word} == (
          g.token_is_max_context)
    if training:
      starts = feats.arrays["start_positions"]
      assert (starts == 0).any() and (starts > 0).any()


def _reference_results(expected, start, end, lengths):
  """What TF1's estimator returns: float lists; padding at -1e30 (see the
  module docstring of bert_jax/tasks/squad.py)."""
  results = []
  for f, g in enumerate(expected):
    s, e = start[f].astype(np.float64), end[f].astype(np.float64)
    s[lengths[f]:] = e[lengths[f]:] = -1e30
    results.append(ref.RawResult(g.unique_id, [float(x) for x in s],
                                 [float(x) for x in e]))
  return results


@pytest.mark.parametrize("v2", [False, True])
def test_decoding_equals_write_predictions(tmp_path, tokenizer, v2):
  articles = random_articles(3 + v2, n_paragraphs=10, v2=v2, training=False)
  path = write_json(tmp_path / "dev.json", squad_json(articles))
  dev = squad.read_squad(path, is_training=False, version_2_with_negative=v2)
  feats = squad.make_features(dev.examples, tokenizer, is_training=False,
                              **WINDOWS)
  theirs = ref.read_squad_examples(articles, False, v2)
  expected = ref.convert_examples_to_features(theirs, tokenizer,
                                              is_training=False, **WINDOWS)
  lengths = feats.arrays["input_mask"].sum(-1)
  rng = np.random.default_rng(v2)
  checked = nulls = crashes = 0
  for trial, (n_best, max_len, thresh) in enumerate(
      [(20, 30, 0.0), (5, 3, -1.0), (3, 30, 1.5), (20, 2, 0.0)]):
    start = rng.normal(0, 3, (feats.num_features, 64)).astype(np.float32)
    end = rng.normal(0, 3, start.shape).astype(np.float32)
    # Some windows favour the null answer ([CLS]) strongly.
    start[:, 0] += rng.uniform(0, 12, len(start)).astype(np.float32)
    end[:, 0] += rng.uniform(0, 12, len(start)).astype(np.float32)
    if trial == 3:  # many ties: the order among equal scores matters
      start, end = np.round(start), np.round(end)
    # Our padding positions hold garbage: they must be ignored.
    pad = np.arange(64)[None] >= lengths[:, None]
    start[pad], end[pad] = 50.0, 50.0
    ours = squad.decode(dev.examples, feats, start, end, n_best_size=n_best,
                        max_answer_length=max_len, do_lower_case=True,
                        version_2_with_negative=v2,
                        null_score_diff_threshold=thresh)
    preds, nbest, odds, crashed = ref.write_predictions(
        theirs, expected, _reference_results(expected, start, end, lengths),
        n_best, max_len, True, v2, thresh, tokenization.BasicTokenizer)
    # Where the original crashes (v2, no span left but the null one), a
    # nonce "empty" span of score 0 is the best non-null one.
    for qid in crashed:
      assert ours.predictions.pop(qid) == ""
      assert ours.nbest.pop(qid)[0]["text"] == "empty"
      assert ours.null_odds.pop(qid) > 0
    crashes += len(crashed)
    assert ours.predictions == dict(preds)
    assert ours.null_odds == dict(odds)
    assert ours.nbest == {k: [dict(e) for e in v] for k, v in nbest.items()}
    checked += sum(bool(p) for p in preds.values())
    nulls += sum(p == "" for p in preds.values())
  assert checked > 20
  assert (nulls > 10) == v2
  assert crashes < checked / 4  # rare: most questions keep a span
  # Original characters come back: accents, case, a possessive cut off.
  texts = {e["text"] for v in ours.nbest.values() for e in v}
  assert any("é" in t or "ï" in t for t in texts)
  assert any(t[:1].isupper() for t in texts)


def test_final_text_projects_onto_the_original_characters():
  assert squad.final_text("steve smith", "Steve Smith's", True) == (
      "Steve Smith")
  assert squad.final_text("cafe", "Café!", True) == "Café"
  assert squad.final_text("1895", "(1895-1943).", True) == "1895"
  # Alignment fails: the whole words come back (as the original).
  assert squad.final_text("zzz", "Steve Smith's", True) == "Steve Smith's"


def test_metrics_equal_the_official_scripts():
  rng = random.Random(0)
  golds = ["The Eiffel Tower", "an apple", "1,000 km", "Paris, France",
           "the the", "Über café", "x y z", "!!!", "a"]
  articles = [{"paragraphs": [{"context": "", "qas": []}]}]
  preds_pool = golds + ["eiffel tower", "tower", "", "apple pie", "km 1000",
                        "France", "y z x z", "café"]
  qas = articles[0]["paragraphs"][0]["qas"]
  for i in range(60):
    answers = [{"text": rng.choice(golds), "answer_start": 0}
               for _ in range(rng.choice([0, 1, 1, 2, 3]))]
    qas.append({"id": f"q{i}", "question": "?", "answers": answers})
  preds = {qa["id"]: rng.choice(preds_pool) for qa in qas}
  gold = [(qa["id"], [a["text"] for a in qa["answers"]]) for qa in qas]

  v1_qas = [qa for qa in qas if qa["answers"]]
  v1 = [{"paragraphs": [{"context": "", "qas": v1_qas}]}]
  v1_preds = {k: v for k, v in preds.items() if k != v1_qas[0]["id"]}
  expected = ref.evaluate_v1(v1, v1_preds)  # one unanswered question: 0
  got = squad.squad_v1_metrics(
      [(qa["id"], [a["text"] for a in qa["answers"]]) for qa in v1_qas],
      v1_preds)
  assert got == expected
  # (v1.1 gives F1 0 where both sides normalise to "": "!!!" vs "".)
  assert 0 < got["exact_match"] < 100 and 0 < got["f1"] < 100

  na_probs = {k: rng.uniform(-5, 5) for k in preds}
  for probs, thresh in ((None, 1.0), (na_probs, 1.0), (na_probs, 0.0),
                        (na_probs, -2.5)):
    expected = ref.evaluate_v2(articles, preds, probs, thresh)
    got = squad.squad_v2_metrics(gold, preds, probs, thresh)
    assert got == dict(expected), (probs is None, thresh)
    if probs is None:
      assert 0 < got["NoAns_exact"] < 100 and 0 < got["HasAns_f1"] < 100
    else:  # (not always >= f1: the official search counts a NoAns
      # question answered "!!!" as wrong, its F1 as right)
      assert {"best_f1", "best_f1_thresh", "best_exact_thresh"} <= set(got)
  # A question without a prediction is left out in v2 (where the official
  # script crashes): as if it were not in the file.
  del preds["q3"]
  qas.remove(next(qa for qa in qas if qa["id"] == "q3"))
  assert squad.squad_v2_metrics(gold, preds) == dict(
      ref.evaluate_v2(articles, preds))


# -- the job -------------------------------------------------------------------

NAMES = ("moses", "david", "aaron", "jacob", "abraham", "joseph", "samuel",
         "saul", "solomon", "peter", "paul", "john")
FILLER = ("the", "a", "of", "and", "man", "house", "day", "night", "said",
          "went", "city", "land", "water", "came", "saw")


def write_squad20(directory, n_train=240, n_dev=60, seed=0):
  """SQuAD 2.0 files with a signal a tiny model learns in seconds: the
  answer is the one name in the context; a context without one has no
  answer. Contexts run past one window, so windows and the max-context
  rule matter."""
  rng = random.Random(seed)

  def article(n, prefix):
    paragraphs = []
    for i in range(n):
      words = [rng.choice(FILLER) for _ in range(rng.randint(10, 70))]
      impossible = rng.random() < 0.3
      name = rng.choice(NAMES).capitalize()
      if not impossible:
        words.insert(rng.randrange(len(words) + 1), name)
      context = " ".join(words)
      qa = {"id": f"{prefix}{i}", "question": "who is named here?",
            "is_impossible": impossible, "answers": []}
      if impossible:
        qa["plausible_answers"] = [{"text": "man",
                                    "answer_start": context.find("man")}]
      else:
        qa["answers"] = [{"text": name,
                          "answer_start": (" " + context + " ").find(
                              f" {name} ")}]
      paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "v2.0", "data": [{"title": prefix,
                                         "paragraphs": paragraphs}]}

  write_json(os.path.join(directory, "train-v2.0.json"),
             article(n_train, "t"))
  write_json(os.path.join(directory, "dev-v2.0.json"), article(n_dev, "d"))
  return str(directory)


def squad_config(data_dir, task="squad20", **overrides):
  c = finetune_configs.get_config(task)
  c.unlock()
  c.init_checkpoint = ""  # a fresh tiny encoder: this signal needs no more
  c.vocab_file = CORPUS_VOCAB
  c.model.preset = "tiny"
  c.data_dir = data_dir
  c.max_seq_length = 64
  c.doc_stride = 24
  c.max_query_length = 16
  c.train_batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 2e-3
  c.num_train_epochs = 4.0
  c.log_every_steps = 20
  c.save_checkpoints_steps = 1000
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_dropout_prob = 0.0
  c.update_from_flattened_dict(overrides)
  c.lock()
  return c


def test_squad20_learns_writes_run_squad_files_and_matches_transformers(
    tmp_path):
  data = write_squad20(tmp_path / "squad")
  config = squad_config(data)
  workdir = str(tmp_path / "ft")
  results = train.train_and_evaluate(config, workdir)
  # TF1 counts steps from the examples, not the windows: 240 x 4 / 16.
  assert results["steps"] == 60
  assert results["windows"]["train"] > 240
  assert results["task"] == "squad20"
  assert results["skipped"] == {"train": {"answer_not_found": 0}}
  # Chance: "" everywhere is right on the ~30% impossible questions.
  assert results["eval_exact_match"] > 85, results
  assert results["eval_HasAns_exact"] > 80 and results["eval_NoAns_exact"] > 80
  assert {"eval_f1", "eval_loss", "eval_best_f1", "eval_best_f1_thresh",
          "eval_best_exact", "eval_best_exact_thresh",
          "eval_NoAns_f1", "eval_HasAns_f1"} <= set(results)

  # The files, scored by the literal port of evaluate-v2.0.py as the BERT
  # README runs it, give results.json's numbers.
  files = results["predictions"]
  preds = json.load(open(files["predictions"]))
  odds = json.load(open(files["null_odds"]))
  nbest = json.load(open(files["nbest"]))
  assert set(preds) == set(odds) == set(nbest) and len(preds) == 60
  dev = json.load(open(os.path.join(data, "dev-v2.0.json")))["data"]
  official = ref.evaluate_v2(dev, preds, odds, 0.0)
  assert official["exact"] == results["eval_exact_match"]
  assert official["f1"] == results["eval_f1"]
  assert official["best_f1_thresh"] == results["eval_best_f1_thresh"]
  for qid, p in preds.items():
    assert (p == "") == (odds[qid] > 0.0)
    assert abs(sum(e["probability"] for e in nbest[qid]) - 1) < 1e-9

  _assert_hf_qa_logits_equal(config, workdir, results["checkpoints"]["hf"])


def test_squad11_learns_on_1_1_files(tmp_path):
  """The same signal as SQuAD 1.1 files (answerable questions only, dev
  questions with several gold answers): exact match far above chance
  (about 1 in 40 context words)."""
  data = str(tmp_path / "squad")
  write_squad20(data, n_train=320)
  for split in ("train", "dev"):
    value = json.load(open(os.path.join(data, f"{split}-v2.0.json")))
    for p in value["data"][0]["paragraphs"]:
      p["qas"] = [qa for qa in p["qas"] if not qa.pop("is_impossible")]
      for qa in p["qas"]:
        qa.pop("plausible_answers", None)
        if split == "dev":  # a second, wrong gold answer changes no max
          qa["answers"].append({"text": "the", "answer_start": 0})
    write_json(os.path.join(data, f"{split}-v1.1.json"), value)
  config = squad_config(data, task="squad11", num_train_epochs=2.0,
                        export=False)
  results = train.train_and_evaluate(config, str(tmp_path / "ft"))
  train_file = json.load(open(os.path.join(data, "train-v1.1.json")))
  n = sum(len(p["qas"]) for p in train_file["data"][0]["paragraphs"])
  assert results["steps"] == int(n / 16 * 2)
  assert results["eval_exact_match"] > 70, results
  assert results["eval_f1"] >= results["eval_exact_match"]
  assert "eval_HasAns_exact" not in results and "checkpoints" not in results
  assert not os.path.exists(os.path.join(str(tmp_path / "ft"),
                                         "null_odds.json"))


def _assert_hf_qa_logits_equal(config, workdir, hf_dir, n=12):
  """transformers' BertForQuestionAnswering on our export == our model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf, info = transformers.BertForQuestionAnswering.from_pretrained(
      hf_dir, output_loading_info=True)
  hf.eval()
  assert not any(info.values()), info  # no missing or unexpected keys
  task = train.tasks.from_config(config)
  task.prepare(workdir)
  split = task.evals[0]
  feats = {k: v[:n] for k, v in split.features.items()}
  with torch.no_grad():
    out = hf(**{a: torch.tensor(feats[k], dtype=torch.long) for a, k in (
        ("input_ids", "input_ids"), ("attention_mask", "input_mask"),
        ("token_type_ids", "segment_ids"))})
  mesh = train.make_mesh(config)
  fns = train.make_train_step(config, mesh, task=task)
  _, state, _ = train.checkpoints.Checkpointer(
      os.path.join(workdir, "checkpoints")).restore_latest(fns.abstract_state)
  batch = {**feats, "example_index": np.arange(n, dtype=np.int32)}
  with train.sharding.activation_rules(mesh, train.rules_of(config)):
    ours = jax.device_get(jax.jit(lambda p, b: task.eval_outputs(
        train.nnx.merge(fns.graphdef, p), b))(state["params"], batch))
  mask = feats["input_mask"] > 0
  assert mask.sum() > 200
  for key, theirs in (("start_logits", out.start_logits),
                      ("end_logits", out.end_logits)):
    np.testing.assert_allclose(ours[key][mask], theirs.numpy()[mask],
                               atol=2e-5)


def test_minilm_qa_export_equals_transformers(tmp_path):
  """Real weights (all-MiniLM-L6-v2) under a seeded span layer: the
  export's BertForQuestionAnswering gives our start/end logits on a padded
  batch of sentences and pairs."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bert_jax import heads  # pylint: disable=g-import-not-at-top
  from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
  from tests import minilm  # pylint: disable=g-import-not-at-top
  cfg, encoder, _ = pretrained.load_pretrained(minilm.model_path(),
                                               task="encoder")
  model = heads.BertForQuestionAnswering(cfg, rngs=nnx.Rngs(3))
  params = pretrained.jax_to_numpy(nnx.to_pure_dict(nnx.state(model,
                                                              nnx.Param)))
  params["bert"] = encoder
  params["qa_outputs"]["bias"] = np.array([0.5, -0.25], np.float32)
  nnx.update(model, nnx.State(params))
  out_dir = pretrained.export_hf_question_answering(
      cfg, params, None, str(tmp_path / "hf"))
  hf, info = transformers.BertForQuestionAnswering.from_pretrained(
      out_dir, output_loading_info=True)
  assert not any(info.values()), info
  batch = minilm.hf_batch()
  start, end = model(batch["input_ids"], batch["segment_ids"],
                     batch["input_mask"])
  with torch.no_grad():
    out = hf.eval()(input_ids=torch.tensor(batch["input_ids"]).long(),
                    attention_mask=torch.tensor(batch["input_mask"]).long(),
                    token_type_ids=torch.tensor(batch["segment_ids"]).long())
  mask = batch["input_mask"] > 0
  np.testing.assert_allclose(np.asarray(start)[mask],
                             out.start_logits.numpy()[mask], atol=1e-5)
  np.testing.assert_allclose(np.asarray(end)[mask],
                             out.end_logits.numpy()[mask], atol=1e-5)


def test_bad_squad_input_is_one_line(tmp_path):
  data = write_squad20(tmp_path / "squad", n_train=8, n_dev=4)

  def error(**overrides):
    task = train.tasks.from_config(squad_config(data, **overrides))
    with pytest.raises(base.ConfigError) as e:
      train.validate(task.config, str(tmp_path / "w"),
                     train.make_mesh(task.config), task)
      task.prepare(str(tmp_path / "w"))
    assert "\n" not in str(e.value)
    return str(e.value)

  assert "config.max_query_length=16" in error(max_seq_length=19)
  assert "nothing.json: no such file" in error(predict_file="nothing.json")

  def corrupt(name, edit):
    path = os.path.join(data, name)
    value = json.load(open(path))
    edit(value)
    write_json(os.path.join(data, "bad.json"), value)
    return error(train_file="bad.json")

  qa = lambda v: v["data"][0]["paragraphs"][0]["qas"][0]
  msg = corrupt("train-v2.0.json",
                lambda v: v["data"][0]["paragraphs"][1].pop("context"))
  assert "bad.json: data[0].paragraphs[1]: no 'context' key" in msg
  msg = corrupt("train-v2.0.json", lambda v: qa(v).update(
      is_impossible=False, answers=[{"text": "zz", "answer_start": 10**6}]))
  assert "bad.json: question 't0'" in msg and "outside its context" in msg
  msg = corrupt("train-v2.0.json", lambda v: qa(v).update(
      is_impossible=False, answers=[]))
  assert "question 't0': 0 answers" in msg
  # An answer whose text is not where its offset points: skipped and
  # counted, as the original skips it.
  value = json.load(open(os.path.join(data, "train-v2.0.json")))
  paragraphs = value["data"][0]["paragraphs"]
  qa = next(p["qas"][0] for p in paragraphs
            if not p["qas"][0]["is_impossible"])
  qa["answers"][0]["answer_start"] = 0
  write_json(os.path.join(data, "skip.json"), value)
  task = train.tasks.from_config(squad_config(data, train_file="skip.json"))
  task.prepare(str(tmp_path / "w"))
  assert task.skipped == {"train": {"answer_not_found": 1}}
  assert len(task.train.examples) == len(paragraphs) - 1
  with open(os.path.join(data, "bad.json"), "w") as f:
    f.write('{"data": [')
  assert "bad.json: not valid JSON" in error(train_file="bad.json")
  # A 2.0 file given to squad11: named, with the way out.
  msg = error(task="squad11", train_file="train-v2.0.json",
              predict_file="dev-v2.0.json")
  assert "squad20" in msg and "train-v2.0.json: question" in msg


def test_squad_with_bilstm_builds_the_bilstm_head():
  """`task=squad11,bilstm=true` (Table 5) puts the BiLSTM under the span
  layer: its output layer reads 2 x lstm_units features, not hidden_size."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import squad  # pylint: disable=g-import-not-at-top
  from configs import finetune as finetune_configs  # pylint: disable=g-import-not-at-top
  c = finetune_configs.get_config("task=squad11,bilstm=true")
  c.unlock()
  c.lstm_units = 8
  cfg = model_lib.BertConfig.from_preset(
      "L1_H32_A2", vocab_size=64, vocab_pad_multiple=1)
  task = squad.SquadTask(c)
  model = task.build_model(cfg, nnx.Rngs(0))
  assert model.lstm is not None
  assert model.qa_outputs.kernel.shape == (16, 2)
  plain = squad.SquadTask(finetune_configs.get_config("squad11"))
  assert plain.build_model(cfg, nnx.Rngs(0)).lstm is None
