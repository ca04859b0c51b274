"""GLUE data: task specs, TSV/TFDS readers, labels, metrics, submissions.

Data only: the trainer-facing task (`bert_jax.tasks.classification`) builds
on it. The readers take the GLUE directory exactly as `download_glue_data.py`
lays it out (`glue_data/CoLA/train.tsv`, ..., `glue_data/diagnostic/
diagnostic.tsv`), with each file's own column layout and header rule as the
TF1 `run_classifier.py` processors and HF's GLUE processors read them:

| task | train/dev columns (text_a, text_b, label) | test columns |
|---|---|---|
| CoLA | no header; source, label, mark, sentence (3, -, 1) | index, sentence |
| SST-2 | sentence, label (0, -, 1) | index, sentence |
| MRPC | Quality, #1 ID, #2 ID, #1 String, #2 String (3, 4, 0) | index, ... |
| STS-B | 10 columns (7, 8, score last) | 9 columns (7, 8) |
| QQP | id qid1 qid2 question1 question2 is_duplicate (3, 4, 5) | id q1 q2 |
| MNLI | 12 (train) / 16 (dev) columns (8, 9, gold_label last) | 10 columns |
| QNLI, RTE, WNLI | index, s1, s2, label (1, 2, 3) | index, s1, s2 |
| AX | (test only) | index, sentence1, sentence2 |

Files are read with `csv.QUOTE_NONE`, as TF1 does (`quotechar=None`): GLUE
text has unbalanced quotes, and quoting would merge lines. Every data row
must have the header's column count, except QQP rows with missing fields,
which HF's processor skips and so do we (counted in `ReadStats`).

Data directories: the `glue_data` root or the task's own directory. With a
`tfds:` prefix (`tfds:/path/to/tensorflow_datasets`, or `tfds:` for
$TFDS_DATA_DIR) a prepared TFDS `glue/<config>` dataset is read instead;
nothing is downloaded.

`custom` is a labelled stand-in set in a plain TSV: `train.tsv`, `dev.tsv`,
`test.tsv` in one directory, each with a header naming `text_a` (or
`sentence`), optionally `text_b`, `label` (optional in test) and `guid`.
Its labels, in id order, are the ones passed in, else `labels.txt` (one per
line) in the directory, else the sorted set of train labels.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from bert_jax import metrics

# -- task specs ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Example:
  """One sentence (pair); `label` is None on test splits."""
  guid: str
  text_a: str
  text_b: str | None
  label: str | float | None


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """What a GLUE task is, independent of where its data lives.

  Attributes:
    name: short name (`cola`, ..., `ax`, `custom`).
    labels: class labels in id order (TF1's `get_labels()` order, so
      checkpoints and label ids agree with the original); None for STS-B
      regression.
    metric_kind: a `bert_jax.metrics.KINDS` entry.
    glue_dir: the task's directory in the GLUE distribution.
    train_split: None for AX (a test set only).
    eval_splits: labelled splits scored after training.
    test_splits: unlabelled splits predicted for the GLUE server. MNLI's
      include `ax`: the diagnostic set is scored with the MNLI model.
    submission_files: (split, file name the GLUE server expects) pairs.
    tfds_config: the `glue/<config>` TFDS dataset with the same data.
  """
  name: str
  labels: tuple[str, ...] | None
  metric_kind: str
  glue_dir: str
  train_split: str | None = "train"
  eval_splits: tuple[str, ...] = ("dev",)
  test_splits: tuple[str, ...] = ("test",)
  submission_files: tuple[tuple[str, str], ...] = ()
  tfds_config: str = ""

  @property
  def is_regression(self) -> bool:
    return self.labels is None

  @property
  def splits(self) -> tuple[str, ...]:
    train = (self.train_split,) if self.train_split else ()
    return (*train, *self.eval_splits, *self.test_splits)

  def submission_file(self, split: str) -> str:
    for s, name in self.submission_files:
      if s == split:
        return name
    raise ValueError(f"{self.name}: {split!r} is not a test split (test "
                     f"splits: {', '.join(self.test_splits)})")


_BINARY = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")  # TF1's MnliProcessor
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", _BINARY, "matthews", "CoLA",
             submission_files=(("test", "CoLA.tsv"),), tfds_config="cola"),
    GlueTask("sst2", _BINARY, "accuracy", "SST-2",
             submission_files=(("test", "SST-2.tsv"),), tfds_config="sst2"),
    GlueTask("mrpc", _BINARY, "accuracy_f1", "MRPC",
             submission_files=(("test", "MRPC.tsv"),), tfds_config="mrpc"),
    GlueTask("stsb", None, "pearson_spearman", "STS-B",
             submission_files=(("test", "STS-B.tsv"),), tfds_config="stsb"),
    GlueTask("qqp", _BINARY, "accuracy_f1", "QQP",
             submission_files=(("test", "QQP.tsv"),), tfds_config="qqp"),
    GlueTask("mnli", _NLI3, "accuracy", "MNLI",
             eval_splits=("dev_matched", "dev_mismatched"),
             test_splits=("test_matched", "test_mismatched", "ax"),
             submission_files=(("test_matched", "MNLI-m.tsv"),
                               ("test_mismatched", "MNLI-mm.tsv"),
                               ("ax", "AX.tsv")),
             tfds_config="mnli"),
    GlueTask("qnli", _NLI2, "accuracy", "QNLI",
             submission_files=(("test", "QNLI.tsv"),), tfds_config="qnli"),
    GlueTask("rte", _NLI2, "accuracy", "RTE",
             submission_files=(("test", "RTE.tsv"),), tfds_config="rte"),
    GlueTask("wnli", _BINARY, "accuracy", "WNLI",
             submission_files=(("test", "WNLI.tsv"),), tfds_config="wnli"),
    GlueTask("ax", _NLI3, "accuracy", "diagnostic", train_split=None,
             eval_splits=(), submission_files=(("test", "AX.tsv"),),
             tfds_config="ax"),
)}

# Tasks a model is fine-tuned on (AX has no training data: MNLI's model
# predicts it).
GLUE_NAMES = tuple(n for n, t in TASKS.items() if t.train_split)

# `custom` before its labels are known (see `task_spec`).
CUSTOM = GlueTask("custom", (), "accuracy", "",
                  submission_files=(("test", "test_predictions.tsv"),))


def task_spec(task: str, data_dir: str | None = None,
              labels: Sequence[str] | None = None) -> GlueTask:
  """The spec of `task`; for `custom`, with its labels resolved.

  Args:
    task: a `TASKS` name or `custom`.
    data_dir: where a custom set lives (its labels.txt or train.tsv say the
      labels); unused for GLUE tasks.
    labels: a custom set's labels in id order. For a GLUE task they are
      fixed; passing them is allowed only when they are the same.
  """
  if task == "custom":
    if labels:
      resolved = _check_labels(tuple(labels), "labels")
    elif data_dir is None:
      raise ValueError("task custom: its labels come from labels= or from "
                       "labels.txt / train.tsv in data_dir; neither given")
    else:
      resolved = _custom_labels(data_dir)
    return dataclasses.replace(CUSTOM, labels=resolved)
  if task not in TASKS:
    raise ValueError(f"task {task!r} is not known; known: "
                     f"{', '.join(TASKS)}, custom")
  spec = TASKS[task]
  if labels and tuple(labels) != spec.labels:
    raise ValueError(f"task {task}: labels are fixed to {spec.labels}; got "
                     f"labels={tuple(labels)} (use task=custom for others)")
  return spec


def _spec(task: str | GlueTask) -> GlueTask:
  if isinstance(task, GlueTask):
    return task
  if task == "custom":
    raise ValueError("task custom: pass task_spec('custom', data_dir) (its "
                     "labels depend on the data), not the name")
  return task_spec(task)


# -- TSV layouts --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one kind of GLUE file keeps its fields.

  Attributes:
    header: (column, name) pairs the header row must have; None: the file has
      no header row (CoLA train/dev) and `columns` fields a row.
    columns: the column count of a header-less file.
    text_a, text_b, label, index: column numbers (negative from the end);
      None where the file has no such field.
  """
  header: tuple[tuple[int, str], ...] | None
  text_a: int
  text_b: int | None
  label: int | None
  index: int | None
  columns: int | None = None


def _layouts() -> dict[tuple[str, bool], _Layout]:
  """(task, labelled file?) -> layout. Header names are those TFDS's GLUE
  builder reads the same files by, so they are the distributed ones."""
  pair = _Layout(((0, "index"), (1, "sentence1"), (2, "sentence2"),
                  (3, "label")), 1, 2, 3, 0)
  pair_test = _Layout(((0, "index"), (1, "sentence1"), (2, "sentence2")),
                      1, 2, None, 0)
  return {
      ("cola", True): _Layout(None, 3, None, 1, None, columns=4),
      ("cola", False): _Layout(((0, "index"), (1, "sentence")), 1, None, None,
                               0),
      ("sst2", True): _Layout(((0, "sentence"), (1, "label")), 0, None, 1,
                              None),
      ("sst2", False): _Layout(((0, "index"), (1, "sentence")), 1, None, None,
                               0),
      ("mrpc", True): _Layout(((0, "Quality"), (3, "#1 String"),
                               (4, "#2 String")), 3, 4, 0, None),
      ("mrpc", False): _Layout(((0, "index"), (3, "#1 String"),
                                (4, "#2 String")), 3, 4, None, 0),
      ("stsb", True): _Layout(((0, "index"), (7, "sentence1"),
                               (8, "sentence2"), (-1, "score")), 7, 8, -1, 0),
      ("stsb", False): _Layout(((0, "index"), (7, "sentence1"),
                                (8, "sentence2")), 7, 8, None, 0),
      ("qqp", True): _Layout(((0, "id"), (3, "question1"), (4, "question2"),
                              (5, "is_duplicate")), 3, 4, 5, 0),
      ("qqp", False): _Layout(((0, "id"), (1, "question1"),
                               (2, "question2")), 1, 2, None, 0),
      ("mnli", True): _Layout(((0, "index"), (8, "sentence1"),
                               (9, "sentence2"), (-1, "gold_label")),
                              8, 9, -1, 0),
      ("mnli", False): _Layout(((0, "index"), (8, "sentence1"),
                                (9, "sentence2")), 8, 9, None, 0),
      ("qnli", True): _Layout(((0, "index"), (1, "question"), (2, "sentence"),
                               (3, "label")), 1, 2, 3, 0),
      ("qnli", False): _Layout(((0, "index"), (1, "question"),
                                (2, "sentence")), 1, 2, None, 0),
      ("rte", True): pair, ("rte", False): pair_test,
      ("wnli", True): pair, ("wnli", False): pair_test,
      ("ax", False): pair_test,
  }


_LAYOUTS = _layouts()

# TFDS `glue/<config>` text features for text_a and text_b.
_TFDS_TEXT = {
    "cola": ("sentence", None), "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"), "ax": ("premise", "hypothesis"),
}


@dataclasses.dataclass
class ReadStats:
  """What reading one split saw.

  Attributes:
    path: the file (or `tfds:` dataset and split) read.
    rows: data rows seen (the header not counted).
    skipped: reason -> rows skipped for it (only where the original
      processors skip too: QQP rows with missing fields).
    skipped_lines: the first few skipped line numbers, to look at.
  """
  path: str
  rows: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)
  skipped_lines: list[int] = dataclasses.field(default_factory=list)

  def skip(self, reason: str, line: int) -> None:
    self.skipped[reason] = self.skipped.get(reason, 0) + 1
    if len(self.skipped_lines) < 10:
      self.skipped_lines.append(line)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())


# -- files --------------------------------------------------------------------


def _is_test(spec: GlueTask, split: str) -> bool:
  return split in spec.test_splits


def _file_name(spec: GlueTask, split: str) -> str:
  if split not in spec.splits:
    raise ValueError(f"task {spec.name}: no split {split!r} (splits: "
                     f"{', '.join(spec.splits)})")
  if spec.name == "ax" or split == "ax":
    return "diagnostic.tsv"
  return f"{split}.tsv"


def _candidates(spec: GlueTask, data_dir: str, split: str) -> list[str]:
  """Where the split's file may be, best first."""
  name = _file_name(spec, split)
  if spec.name == "custom":
    return [os.path.join(data_dir, name)]
  if split == "ax":  # MNLI's model on the diagnostic set, a sibling dir.
    return [os.path.join(data_dir, "diagnostic", name),
            os.path.join(data_dir, name),
            os.path.join(os.path.dirname(os.path.abspath(data_dir)),
                         "diagnostic", name)]
  # The glue_data root (official directory name, or the short task name),
  # else the task's own directory.
  return [os.path.join(data_dir, spec.glue_dir, name),
          os.path.join(data_dir, spec.name, name),
          os.path.join(data_dir, name)]


def _find_file(spec: GlueTask, data_dir: str, split: str) -> str:
  candidates = _candidates(spec, data_dir, split)
  for path in candidates:
    if os.path.isfile(path):
      return path
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"{data_dir}: no such directory (data for task "
                            f"{spec.name})")
  task_dir = os.path.join(data_dir, spec.glue_dir) if spec.glue_dir else ""
  shown = task_dir if task_dir and os.path.isdir(task_dir) else data_dir
  have = sorted(os.listdir(shown))
  raise FileNotFoundError(
      f"{os.path.join(shown, os.path.basename(candidates[0]))}: no such file "
      f"(task {spec.name}, split {split}; expected "
      f"{os.path.basename(candidates[0])}); {shown} has: "
      f"{', '.join(have) if have else 'nothing'}")


def has_split(task: str | GlueTask, data_dir: str, split: str) -> bool:
  """Whether the split's data is there (test files are often left out)."""
  # Where a file is does not depend on a custom set's labels.
  spec = task if isinstance(task, GlueTask) else (
      CUSTOM if task == "custom" else task_spec(task))
  if data_dir.startswith("tfds:"):
    config, tfds_split = _tfds_names(spec, split)
    try:
      builder = _tfds_builder(data_dir, config)
    except FileNotFoundError:
      return False
    return tfds_split in builder.info.splits
  return any(os.path.isfile(p) for p in _candidates(spec, data_dir, split))


def _rows(path: str) -> Iterable[tuple[int, list[str]]]:
  """(line number, fields) of a TSV, read without quote handling.

  `utf-8-sig` drops the byte-order mark MRPC's train file inherits from
  Microsoft's release (it would otherwise be part of the 'Quality' name).
  """
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
      for fields in reader:
        yield reader.line_num, fields
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}:{reader.line_num + 1}: not UTF-8 text "
                       f"({e})") from None
    except csv.Error as e:
      raise ValueError(f"{path}:{reader.line_num}: {e}") from None


def _check_header(path: str, fields: list[str], layout: _Layout,
                  spec: GlueTask, split: str) -> None:
  for col, name in layout.header:
    got = fields[col] if -len(fields) <= col < len(fields) else None
    if got != name:
      want = ", ".join(f"[{c}] {n}" for c, n in layout.header)
      raise ValueError(
          f"{path}:1: not a GLUE {spec.glue_dir} {split} header: column "
          f"{col} is {got!r}, expected {name!r} (expected columns {want}; "
          f"got {fields[:12]})")


def read_examples(task: str | GlueTask, data_dir: str, split: str,
                  labels: Sequence[str] | None = None
                  ) -> tuple[list[Example], ReadStats]:
  """Reads one split of a GLUE task (or of a custom set).

  Args:
    task: a `TASKS` name, `custom`, or a spec from `task_spec`.
    data_dir: the glue_data root, the task's directory, or `tfds:<dir>`.
    split: one of the spec's `splits` (`train`, `dev`, `test`; MNLI:
      `dev_matched`, `dev_mismatched`, `test_matched`, `test_mismatched`,
      `ax`; AX: `test`).
    labels: for `custom`, its labels in id order (see `task_spec`).

  Returns:
    The examples in file order and what reading saw. guid: the `index`
    column on test splits (what the submission files need), else
    `{split}-{index}` (`{split}-{row}` where a file has no index column,
    row counting data rows from 0).

  Raises:
    FileNotFoundError: the split's file is missing (the message lists what
      the directory has).
    ValueError: a malformed row, header or label, naming file and line.
  """
  spec = (task if isinstance(task, GlueTask)
          else task_spec(task, data_dir, labels))
  if data_dir.startswith("tfds:"):
    return _read_tfds(spec, data_dir, split)
  path = _find_file(spec, data_dir, split)
  if spec.name == "custom":
    return _read_custom(spec, path, split)
  test = _is_test(spec, split)
  layout = _LAYOUTS[(spec.name if split != "ax" else "ax", not test)]
  stats = ReadStats(path)
  examples = []
  width = layout.columns
  for line, fields in _rows(path):
    if layout.header is not None and line == 1:
      _check_header(path, fields, layout, spec, split)
      width = len(fields)
      continue
    row = stats.rows
    stats.rows += 1
    if len(fields) != width:
      if spec.name == "qqp" and len(fields) < width:
        # HF's QqpProcessor drops these (an IndexError); so does TFDS.
        stats.skip(f"fewer than {width} columns", line)
        continue
      source = "as the header has" if layout.header else "the GLUE layout"
      raise ValueError(f"{path}:{line}: {len(fields)} columns, expected "
                       f"{width} ({source})")
    index = fields[layout.index] if layout.index is not None else str(row)
    label = None
    if not test:
      label = _parse_label(spec, fields[layout.label], path, line)
    examples.append(Example(
        guid=index if test else f"{split}-{index}",
        text_a=fields[layout.text_a],
        text_b=fields[layout.text_b] if layout.text_b is not None else None,
        label=label))
  if layout.header is not None and width is None:
    raise ValueError(f"{path}:1: empty file (expected a header row)")
  return examples, stats


def _parse_label(spec: GlueTask, raw: str, path: str,
                 line: int) -> str | float:
  if spec.is_regression:
    try:
      value = float(raw)
    except ValueError:
      value = math.nan
    if not math.isfinite(value):
      raise ValueError(f"{path}:{line}: score {raw!r} is not a number "
                       f"({spec.name} is a regression task)")
    return value
  if raw not in spec.labels:
    raise ValueError(f"{path}:{line}: label {raw!r} is not one of "
                     f"{', '.join(spec.labels)} ({spec.name})")
  return raw


# -- custom sets --------------------------------------------------------------

_CUSTOM_COLUMNS = ("guid", "text_a", "sentence", "text_b", "label")


def _custom_header(path: str, fields: list[str], split: str) -> dict[str, int]:
  cols = {name: i for i, name in enumerate(fields)}
  unknown = [f for f in fields if f not in _CUSTOM_COLUMNS]
  if unknown or len(cols) != len(fields):
    raise ValueError(f"{path}:1: header {fields}: columns must be distinct "
                     f"names from {', '.join(_CUSTOM_COLUMNS)} "
                     f"(unknown: {unknown})")
  if ("text_a" in cols) == ("sentence" in cols):
    raise ValueError(f"{path}:1: header {fields}: name exactly one of "
                     "text_a or sentence")
  if split != "test" and "label" not in cols:
    raise ValueError(f"{path}:1: header {fields}: a {split} file needs a "
                     "label column")
  if "sentence" in cols:
    cols["text_a"] = cols.pop("sentence")
  return cols


def _check_width(path: str, line: int, fields: list[str], width: int) -> None:
  if len(fields) != width:
    raise ValueError(f"{path}:{line}: {len(fields)} columns, expected "
                     f"{width} (as the header has)")


def _read_custom(spec: GlueTask, path: str,
                 split: str) -> tuple[list[Example], ReadStats]:
  stats = ReadStats(path)
  examples = []
  cols: dict[str, int] = {}
  for line, fields in _rows(path):
    if line == 1:
      cols = _custom_header(path, fields, split)
      continue
    row = stats.rows
    stats.rows += 1
    _check_width(path, line, fields, len(cols))
    label = None
    if "label" in cols:
      label = _parse_label(spec, fields[cols["label"]], path, line)
    guid = fields[cols["guid"]] if "guid" in cols else (
        str(row) if split == "test" else f"{split}-{row}")
    examples.append(Example(
        guid=guid, text_a=fields[cols["text_a"]],
        text_b=fields[cols["text_b"]] if "text_b" in cols else None,
        label=label))
  if not cols:
    raise ValueError(f"{path}:1: empty file (expected a header row)")
  return examples, stats


def _check_labels(labels: tuple[str, ...], where: str) -> tuple[str, ...]:
  if not labels or any(not l for l in labels) or len(set(labels)) != len(
      labels):
    raise ValueError(f"{where}: labels {labels} must be distinct, non-empty "
                     "and at least one")
  return labels


def _custom_labels(data_dir: str) -> tuple[str, ...]:
  """labels.txt if there is one, else the sorted labels of train.tsv."""
  path = os.path.join(data_dir, "labels.txt")
  if os.path.isfile(path):
    with open(path, encoding="utf-8-sig") as f:
      labels = tuple(l.strip() for l in f if l.strip())
    return _check_labels(labels, path)
  train = _find_file(CUSTOM, data_dir, "train")
  seen = set()
  for line, fields in _rows(train):
    if line == 1:
      cols = _custom_header(train, fields, "train")
      continue
    _check_width(train, line, fields, len(cols))
    seen.add(fields[cols["label"]])
  return _check_labels(tuple(sorted(seen)), train)


# -- TFDS ---------------------------------------------------------------------


def _tfds_names(spec: GlueTask, split: str) -> tuple[str, str]:
  """(TFDS glue config, TFDS split) for one of our splits."""
  if spec.name == "custom":
    raise ValueError("task custom: a custom set is read from TSV files, not "
                     "tfds:")
  _file_name(spec, split)  # a known split?
  if split == "ax":
    return "ax", "test"
  return spec.tfds_config, split.replace("dev", "validation")


def _tfds_builder(data_dir: str, config: str):
  """The prepared `glue/<config>` builder (newest version) under data_dir."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = data_dir[len("tfds:"):] or os.environ.get(
      "TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  base = os.path.join(root, "glue", config)
  versions = sorted((v for v in (os.listdir(base) if os.path.isdir(base)
                                 else ()) if re.fullmatch(r"\d+\.\d+\.\d+", v)
                     and os.path.isfile(os.path.join(base, v,
                                                     "dataset_info.json"))),
                    key=lambda v: tuple(map(int, v.split("."))))
  if not versions:
    raise FileNotFoundError(f"{data_dir}: no prepared TFDS dataset glue/"
                            f"{config} at {base} (prepare it with `tfds "
                            f"build glue/{config}`; nothing is downloaded "
                            "here)")
  return tfds.builder_from_directory(os.path.join(base, versions[-1]))


def _read_tfds(spec: GlueTask, data_dir: str,
               split: str) -> tuple[list[Example], ReadStats]:
  """A split of a prepared TFDS glue dataset, as the TSV reader gives it.

  Examples are put back in file order (TFDS shuffles records when it
  prepares them) by `idx`, the file's row number, which makes the guid (for
  QQP it differs from the TSV reader's, which uses QQP's id column). Rows
  TFDS dropped while preparing (QQP's short rows) are not seen here, so
  nothing counts as skipped.
  """
  config, tfds_split = _tfds_names(spec, split)
  builder = _tfds_builder(data_dir, config)
  where = f"{builder.data_dir}:{tfds_split}"
  if tfds_split not in builder.info.splits:
    raise ValueError(f"{where}: no such split (has: "
                     f"{', '.join(sorted(builder.info.splits))})")
  if str(builder.info.file_format).lower().endswith("array_record"):
    # Random-access files: read without TensorFlow.
    records = list(builder.as_data_source(split=tfds_split))
  else:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    records = list(tfds.as_numpy(builder.as_dataset(split=tfds_split,
                                                    shuffle_files=False)))
  records.sort(key=lambda r: int(r["idx"]))
  label_feature = builder.info.features["label"]
  names = getattr(label_feature, "names", None)
  text_a, text_b = _TFDS_TEXT[config]
  test = _is_test(spec, split)

  def text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

  examples = []
  for r in records:
    idx = int(r["idx"])
    label = None
    if not test:
      raw = r["label"]
      if spec.is_regression:
        # TFDS keeps float32; its shortest decimal is the file's score.
        label = float(str(np.float32(raw)))
      elif spec.labels == _BINARY:
        label = str(int(raw))  # TFDS class i is the TSV's "i"
      else:
        label = names[int(raw)] if 0 <= int(raw) < len(names) else str(raw)
      if not spec.is_regression and label not in spec.labels:
        raise ValueError(f"{where}: idx {idx}: label {raw!r} maps to "
                         f"{label!r}, not one of {', '.join(spec.labels)}")
    examples.append(Example(
        guid=str(idx) if test else f"{split}-{idx}",
        text_a=text(r[text_a]),
        text_b=text(r[text_b]) if text_b else None, label=label))
  return examples, ReadStats(where, rows=len(examples))


# -- labels, metrics, submissions ---------------------------------------------


def label_to_id(task: str | GlueTask, label: str | float) -> int | float:
  """A class label's id (its place in `labels`), or a regression score."""
  spec = _spec(task)
  if spec.is_regression:
    return float(label)
  try:
    return spec.labels.index(label)
  except ValueError:
    raise ValueError(f"{spec.name}: label {label!r} is not one of "
                     f"{', '.join(spec.labels)}") from None


def label_array(task: str | GlueTask,
                examples: Sequence[Example]) -> np.ndarray:
  """The examples' labels: int32 class ids, or float32 scores (STS-B)."""
  spec = _spec(task)
  missing = [e.guid for e in examples if e.label is None]
  if missing:
    raise ValueError(f"{spec.name}: {len(missing)} examples have no label "
                     f"(e.g. {missing[0]}): a test split?")
  dtype = np.float32 if spec.is_regression else np.int32
  return np.asarray([label_to_id(spec, e.label) for e in examples],
                    dtype=dtype)


def compute_metrics(task: str | GlueTask, predictions,
                    labels) -> dict[str, float]:
  """The task's dev metrics (class ids or scores in, TF1 names out)."""
  return metrics.classification_metrics(_spec(task).metric_kind, predictions,
                                        labels)


def _prediction_text(spec: GlueTask, p: Any) -> str:
  if spec.is_regression:
    value = float(p)
    if not math.isfinite(value):
      raise ValueError(f"{spec.name}: prediction {p!r} is not a number")
    # The GLUE server scores STS-B on [0, 5].
    return f"{min(max(value, 0.0), 5.0):.3f}"
  if isinstance(p, (str, np.str_)):
    if p not in spec.labels:
      raise ValueError(f"{spec.name}: prediction {p!r} is not one of "
                       f"{', '.join(spec.labels)}")
    return str(p)
  i = int(p)
  if i != p or not 0 <= i < len(spec.labels):
    raise ValueError(f"{spec.name}: prediction {p!r} is not a class id in "
                     f"[0, {len(spec.labels)})")
  return spec.labels[i]


def write_submission(task: str | GlueTask, split: str, guids: Sequence[str],
                     predictions: Sequence[Any], out_dir: str) -> str:
  """Writes one GLUE-server prediction file; returns its path.

  The server wants `index\\tprediction` with the test file's index and, per
  task, the label as the data spells it (MNLI/AX `entailment`, `neutral`,
  `contradiction`; QNLI/RTE `entailment`, `not_entailment`; the others
  `0`/`1`), or an STS-B score in [0, 5]. The file name is the server's
  (`CoLA.tsv`, ..., MNLI `test_matched` -> `MNLI-m.tsv`, `test_mismatched`
  -> `MNLI-mm.tsv`, `ax` -> `AX.tsv`).

  Args:
    task: a task name or spec (a custom set writes test_predictions.tsv).
    split: a test split of the task.
    guids: the examples' guids (the test files' index values).
    predictions: class ids or label strings; scores for STS-B.
    out_dir: created if missing. The file is written whole or not at all.
  """
  spec = task if isinstance(task, GlueTask) else (
      CUSTOM if task == "custom" else task_spec(task))
  name = spec.submission_file(split)
  guids, predictions = list(guids), list(predictions)
  if len(guids) != len(predictions):
    raise ValueError(f"{spec.name} {split}: {len(predictions)} predictions "
                     f"for {len(guids)} examples")
  if spec.name == "custom" and not spec.labels and not all(
      isinstance(p, (str, np.str_)) for p in predictions):
    raise ValueError("task custom: pass label strings, or the spec from "
                     "task_spec('custom', ...) to map class ids")
  lines = ["index\tprediction\n"]
  for guid, p in zip(guids, predictions):
    text = str(p) if spec is CUSTOM else _prediction_text(spec, p)
    lines.append(f"{guid}\t{text}\n")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, name)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(lines)
  os.replace(tmp, path)
  return path
