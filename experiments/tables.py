"""Prints the paper's tables with our measured numbers beside them.

    python -m experiments.tables --table=table6_model_size \
        --run=L3_H768_A12=workdir/l3/results.json \
        --run=L12_H768_A12=workdir/base/results.json

The paper's numbers come from `experiments/paper_tables.json` (data, never
used as a test). Ours come from the `results.json` files that
`bert_jax.main` writes at the end of a run; each `--run=ROW=PATH` names the
table row the run stands for. A cell we have not measured prints as "-".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import app
from absl import flags

_TABLE = flags.DEFINE_string("table", "table6_model_size",
                             "Key of the table in paper_tables.json.")
_RUNS = flags.DEFINE_multi_string(
    "run", [], "ROW=PATH/results.json: a run standing for a table row.")
_PAPER = flags.DEFINE_string(
    "paper_tables",
    os.path.join(os.path.dirname(__file__), "paper_tables.json"),
    "The paper's tables.")

# Column of a paper table -> key of results.json that measures it.
RESULT_KEYS = {
    "LM ppl": "masked_lm_perplexity",
    "MNLI-m": "mnli_m_accuracy",
    "QNLI": "qnli_accuracy",
    "MRPC": "mrpc_f1",
    "SST-2": "sst2_accuracy",
    "SQuAD F1": "squad_f1",
}


def load_runs(specs: Sequence[str]) -> dict[str, dict]:
  runs = {}
  for spec in specs:
    row, sep, path = spec.partition("=")
    if not sep or not row or not path:
      raise ValueError(f"--run={spec!r}: expected ROW=PATH/results.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"--run={spec!r}: {path} does not exist")
    with open(path) as f:
      try:
        runs[row] = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
  return runs


def _fmt(x, digits: int | None = None) -> str:
  if x is None:
    return "-"
  if digits is not None and isinstance(x, (int, float)):
    return f"{x:.{digits}f}"
  return str(x)


def render(table: dict, runs: dict[str, dict]) -> str:
  """A Markdown table: for each column, the paper's value then ours."""
  cols = table["columns"]
  head = ["row"] + [f"{c} ({who})" for c in cols for who in ("paper", "ours")]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  unknown = sorted(set(runs) - set(table["rows"]))
  if unknown:
    raise ValueError(f"--run rows {unknown} are not rows of this table; "
                     f"rows: {sorted(table['rows'])}")
  for row, paper in table["rows"].items():
    ours = runs.get(row, {})
    cells = [row]
    for col, value in zip(cols, paper):
      key = RESULT_KEYS.get(col)
      cells += [_fmt(value), _fmt(ours.get(key) if key else None, 2)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  with open(_PAPER.value) as f:
    tables = json.load(f)
  if _TABLE.value not in tables or _TABLE.value == "source":
    raise app.UsageError(
        f"--table={_TABLE.value!r} unknown; known: "
        f"{sorted(k for k in tables if k != 'source')}")
  print(render(tables[_TABLE.value], load_runs(_RUNS.value)))


if __name__ == "__main__":
  app.run(main)
