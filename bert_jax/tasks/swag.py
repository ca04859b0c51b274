"""SWAG: four-way multiple choice on the CSV files as distributed.

The data: `train.csv`, `val.csv` and (optionally) `test.csv` of rowanz/
swagaf's regular split, comma-separated with quoted fields, header
`,video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,
ending2,ending3,label` (test.csv has no `label`). Columns are found by
their header names, so the first (unnamed) index column and the order of
the others do not matter.

The model, as the BERT paper describes it (section 4.4) and Hugging Face's
`run_swag.py` builds it: for each of the four endings one sequence
`[CLS] sent1 [SEP] sent2 ending_i [SEP]` (truncated longest-first to
max_seq_length), a [B, 4, L] feature row per example; a vector whose dot
product with the pooled [CLS] is that choice's score
(`heads.BertForMultipleChoice`), softmax cross-entropy over the four.
Dev accuracy (`eval_accuracy`) and `eval_loss` at the end, a predictions
file per split (the four scores included), and the model exported for
transformers' `BertForMultipleChoice`.

Bad input is one line naming file and line (a row with a missing or empty
ending, a label outside 0-3, a row whose field count differs from the
header's); nothing is skipped silently: HF's reader does not skip either.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import heads
from bert_jax import metrics
from bert_jax import pretrained
from bert_jax.tasks import finetuning

NUM_CHOICES = 4
ENDINGS = tuple(f"ending{i}" for i in range(NUM_CHOICES))
LABELS = tuple(str(i) for i in range(NUM_CHOICES))
# split name -> file name, as swagaf ships them; val is the dev set.
FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
_TEXT_COLUMNS = ("sent1", "sent2", *ENDINGS)


@dataclasses.dataclass(frozen=True)
class SwagExample:
  """One context and its four candidate endings.

  guid: `{split}-{index}`, index the file's first (unnamed) column (the
  row's place in the split), else the data row number from 0; `fold_ind`
  the `fold-ind` column where present (what HF's `run_swag.py` calls the
  swag id). label: the right ending's index, None on test.
  """
  guid: str
  fold_ind: str
  sent1: str
  sent2: str
  endings: tuple[str, ...]
  label: int | None
  line: int  # where the row starts in its file, for messages

  def pairs(self) -> list[tuple[str, str]]:
    """(sentence A, sentence B) of each choice: B = sent2 + ending."""
    return [(self.sent1, f"{self.sent2} {e}".strip()) for e in self.endings]


def split_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, FILES[split])


def _missing_file(data_dir: str, split: str) -> FileNotFoundError:
  if not os.path.isdir(data_dir):
    return FileNotFoundError(f"{data_dir}: no such directory (SWAG data)")
  have = sorted(os.listdir(data_dir))
  return FileNotFoundError(
      f"{split_path(data_dir, split)}: no such file (SWAG {split} split); "
      f"{data_dir} has: {', '.join(have) if have else 'nothing'}")


def read_examples(data_dir: str, split: str) -> list[SwagExample]:
  """One split's examples in file order.

  Raises:
    FileNotFoundError: the split's file is missing.
    ValueError: a bad header, row or label, naming file and line.
  """
  path = split_path(data_dir, split)
  if not os.path.isfile(path):
    raise _missing_file(data_dir, split)
  labelled = split != "test"
  examples = []
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f)
    header = None
    start = 1  # the line the next record starts on (quoted fields may
    try:       # hold newlines, so records and lines differ)
      for fields in reader:
        line, start = start, reader.line_num + 1
        if header is None:
          header = _columns(path, fields, labelled)
          width = len(fields)
          continue
        if not fields:
          continue  # a blank line (csv gives []), e.g. at the end
        examples.append(_example(path, line, fields, header, width, split,
                                 len(examples)))
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}:{start}: not UTF-8 text ({e})") from None
    except csv.Error as e:
      raise ValueError(f"{path}:{reader.line_num}: {e}") from None
  if header is None:
    raise ValueError(f"{path}:1: empty file (expected the SWAG header)")
  return examples


def _columns(path: str, fields: list[str], labelled: bool) -> dict[str, int]:
  """Column name -> position; the header must name every column used."""
  names = {n.strip(): i for i, n in enumerate(fields)}
  need = (*_TEXT_COLUMNS, *(("label",) if labelled else ()))
  missing = [n for n in need if n not in names]
  if missing:
    raise ValueError(
        f"{path}:1: not a SWAG header: no column {', '.join(map(repr, missing))}"
        f" (expected ,video-id,fold-ind,startphrase,sent1,sent2,gold-source,"
        f"{','.join(ENDINGS)}{',label' if labelled else ''}; got "
        f"{','.join(fields)[:200]})")
  return names


def _example(path: str, line: int, fields: list[str], columns: dict[str, int],
             width: int, split: str, row: int) -> SwagExample:
  if len(fields) != width:
    raise ValueError(f"{path}:{line}: {len(fields)} fields, expected {width} "
                     "as the header has (a missing ending? an unquoted "
                     "comma?)")
  for name in _TEXT_COLUMNS[2:]:
    if not fields[columns[name]].strip():
      raise ValueError(f"{path}:{line}: {name} is empty (every SWAG example "
                       f"needs {NUM_CHOICES} endings)")
  if not fields[columns["sent1"]].strip():
    raise ValueError(f"{path}:{line}: sent1 (the context) is empty")
  label = None
  if split != "test":
    raw = fields[columns["label"]].strip()
    if raw not in LABELS:
      raise ValueError(f"{path}:{line}: label {raw!r} is not one of "
                       f"{', '.join(LABELS)} (the index of the right ending)")
    label = int(raw)
  index = fields[0].strip() if "" in columns and columns[""] == 0 else ""
  get = lambda name: fields[columns[name]] if name in columns else ""
  return SwagExample(
      guid=f"{split}-{index or row}", fold_ind=get("fold-ind"),
      sent1=get("sent1"), sent2=get("sent2"),
      endings=tuple(get(e) for e in ENDINGS), label=label, line=line)


def encode(tokenizer, examples: list[SwagExample],
           max_seq_length: int) -> dict[str, np.ndarray]:
  """int32 [N, 4, max_seq_length] input_ids, input_mask, segment_ids."""
  pairs = [p for e in examples for p in e.pairs()]
  enc = tokenizer.encode_pair_batch(pairs, max_seq_length)
  return {k: enc[k].reshape(len(examples), NUM_CHOICES, max_seq_length)
          for k in ("input_ids", "input_mask", "segment_ids")}


def write_csv(path: str, header: list[str], rows) -> str:
  """A CSV file (quoted where needed), written whole or not at all."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  os.replace(tmp, path)
  return path


class SwagTask(finetuning.FinetuneTask):
  """SWAG for the fine-tuning job (`configs/finetune.py:swag`)."""

  objective = "multiple_choice"
  can_pack = True

  def __init__(self, config):
    super().__init__(config)
    self._last_eval: dict[str, np.ndarray] = {}

  # -- set-up --------------------------------------------------------------

  def validate_data(self, check) -> None:
    d = self.config.data_dir
    if os.path.isdir(d):
      for split in ("train", "val"):
        check(os.path.isfile(split_path(d, split)),
              f"config.data_dir={d!r}: {str(_missing_file(d, split))}")

  def read_data(self, tokenizer) -> None:
    c = self.config

    def load(split):
      examples = read_examples(c.data_dir, split)
      if not examples:
        raise ValueError(f"{split_path(c.data_dir, split)}: no examples")
      features = encode(tokenizer, examples, c.max_seq_length)
      labels = None
      if split != "test":
        labels = np.array([e.label for e in examples], np.int32)
        features["labels"] = labels
      return finetuning.Split(split, examples, features, labels)

    self.train = load("train")
    self.evals = [load("val")]
    self.tests = ([load("test")] if os.path.isfile(
        split_path(c.data_dir, "test")) else [])

  def head_description(self) -> str:
    return "multiple-choice scorer (1 output per choice)"

  # -- the model and objective ---------------------------------------------

  def build_model(self, cfg, rngs):
    return heads.BertForMultipleChoice(cfg, rngs=rngs)

  def _logits(self, model, batch, rng):
    return model(batch["input_ids"], batch["segment_ids"],
                 batch["input_mask"], rng=rng,
                 packed=self.packed_inputs(batch))

  def loss(self, model, batch, rng, denominators=None):
    logits_BxC = self._logits(model, batch, rng)
    n = (denominators[0] if denominators is not None
         else jnp.float32(logits_BxC.shape[0]))
    nll = optax.softmax_cross_entropy_with_integer_labels(logits_BxC,
                                                          batch["labels"])
    sums = {"loss_sum": jnp.sum(nll),
            "example_count": jnp.float32(logits_BxC.shape[0]),
            "accuracy_correct": jnp.sum(
                (jnp.argmax(logits_BxC, -1) == batch["labels"]
                 ).astype(jnp.float32))}
    return jnp.sum(nll) / n, sums

  def batch_spec(self, batch_size, seq_len=None):
    seq_len = seq_len or self.config.max_seq_length
    shape = (batch_size, NUM_CHOICES, seq_len)
    spec = (self.packed_spec(batch_size, seq_len, NUM_CHOICES) if self.packs
            else {k: (shape, jnp.int32)
                  for k in ("input_ids", "input_mask", "segment_ids")})
    spec.update({k: ((batch_size,), jnp.int32)
                 for k in ("labels", "example_index")})
    return spec

  # -- evaluation ----------------------------------------------------------

  def eval_outputs(self, model, batch):
    return {"logits": self._logits(model, batch, None),
            "example_index": batch["example_index"]}

  def evaluate(self, run_eval, step):
    del step
    split = self.evals[0]
    logits = self.split_outputs(run_eval, split)["logits"]
    self._last_eval[split.name] = logits
    nll = optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits), jnp.asarray(split.labels))
    return {"eval_accuracy": metrics.accuracy(np.argmax(logits, -1),
                                              split.labels),
            "eval_loss": float(np.mean(np.asarray(nll)))}

  def write_outputs(self, params, workdir, run_eval):
    out: dict[str, Any] = {}
    files = {}
    scored = [(s, self._last_eval[s.name]) for s in self.evals]
    scored += [(s, self.split_outputs(run_eval, s)["logits"])
               for s in self.tests]
    if jax.process_index() == 0:
      for split, logits in scored:
        preds = np.argmax(logits, -1)
        files[split.name] = write_csv(
            os.path.join(workdir, "predictions", f"{split.name}.csv"),
            ["guid", "fold-ind", "prediction", "label",
             *(f"logit{i}" for i in range(NUM_CHOICES))],
            ([e.guid, e.fold_ind, int(p), "" if e.label is None else e.label,
              *(repr(float(x)) for x in row)]
             for e, p, row in zip(split.examples, preds, logits)))
    out["predictions"] = files
    out.update(self.export_hf(params, workdir,
                              pretrained.export_hf_multiple_choice))
    return out
