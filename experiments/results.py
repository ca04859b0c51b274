"""A table's results read back from its jobs' workdirs, beside the paper's.

Per cell: ours as mean +- sample std over the fine-tuning seeds (of the
grid's best point on dev; a pre-training number is one run), the paper's
number (paper_tables.json) and ours minus the paper's. Rendered as a
Markdown table and a CSV; Figure 5 and Table 6's perplexity as PNGs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence

from bert_jax import storage
from experiments import definitions as defs
from experiments import jobs

PAPER_TABLES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "paper_tables.json")


@dataclasses.dataclass(frozen=True)
class CellResult:
  row: str
  column: str
  values: tuple[float, ...]  # per seed, in the paper's unit
  paper: float | None
  percent: bool
  why_missing: str = ""

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float | None:
    return sum(self.values) / self.n if self.values else None

  @property
  def std(self) -> float | None:
    """Sample standard deviation (ddof 1); None below two values."""
    if self.n < 2:
      return None
    m = self.mean
    return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

  @property
  def delta(self) -> float | None:
    if self.mean is None or self.paper is None:
      return None
    return self.mean - self.paper


def load_paper(path: str = PAPER_TABLES) -> dict:
  with open(path) as f:
    return json.load(f)


def _read(path: str) -> dict | None:
  try:
    return json.loads(storage.read_text(path))
  except FileNotFoundError:
    return None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def cell_values(root: str, row: defs.Row, cell: defs.Cell
                ) -> tuple[tuple[float, ...], str]:
  """(values, why there are none) of a pre-training or fine-tuning cell."""
  scale = 100.0 if cell.percent and cell.fraction else 1.0
  if cell.source == "pretrain":
    path = os.path.join(jobs.pretrain_dir(root, row.pretrain), "results.json")
    result = _read(path)
    if result is None:
      return (), "not run"
    if cell.key not in result:
      raise ValueError(f"{path} has no {cell.key!r}")
    return (scale * float(result[cell.key]),), ""
  f = row.finetunes[cell.source]
  path = os.path.join(jobs.finetune_dir(root, row.pretrain, f), "grid.json")
  grid = _read(path)
  if grid is None or not jobs.grid_complete(grid, f.grid):
    return (), "not run" if grid is None else "grid not finished"
  runs = grid["best"].get("runs")
  if not runs:
    raise ValueError(f"{path}: the best point lists no runs (written by an "
                     "older finetune_grid: run the grid again)")
  missing = [r["seed"] for r in runs if cell.key not in r["results"]]
  if missing:
    raise ValueError(f"{path}: seeds {missing} have no {cell.key!r}")
  return tuple(scale * float(r["results"][cell.key]) for r in runs), ""


def collect(table: defs.Table, root: str, paper: dict | None = None
            ) -> list[CellResult]:
  """Every (row, column) of the paper's table, ours beside the paper's."""
  paper = paper or load_paper()
  if table.key not in paper:
    raise ValueError(f"{table.key} is not in paper_tables.json")
  spec = paper[table.key]
  columns = spec["columns"]
  rows = {r.name: r for r in table.rows}
  out = []
  for row_name, paper_values in spec["rows"].items():
    row = rows.get(row_name)
    results = {}
    for col, paper_value in zip(columns, paper_values):
      cell = row.cells.get(col) if row else None
      if cell is None:
        why = (table.missing.get(row_name) or table.missing.get(col)
               or "not defined")
        results[col] = CellResult(row_name, col, (), paper_value, True, why)
      elif cell.source == "mean":
        continue
      else:
        values, why = cell_values(root, row, cell)
        results[col] = CellResult(row_name, col, values, paper_value,
                                  cell.percent, why)
    for col, paper_value in zip(columns, paper_values):
      cell = row.cells.get(col) if row else None
      if cell is not None and cell.source == "mean":
        means = [r.mean for c, r in results.items()]
        value = (() if any(m is None for m in means)
                 else (sum(means) / len(means),))
        results[col] = CellResult(row_name, col, value, paper_value, True,
                                  "" if value else "a column is missing")
    out.extend(results[c] for c in columns)
  return out


def _num(x: float | None, percent: bool, sign: bool = False) -> str:
  if x is None:
    return "-"
  digits = 1 if percent else 2
  return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def cell_text(c: CellResult) -> str:
  paper = _num(c.paper, c.percent)
  if c.mean is None:
    return f"- vs {paper}"
  ours = _num(c.mean, c.percent)
  if c.std is not None:
    ours += f" ± {_num(c.std, c.percent)}"
  delta = f" ({_num(c.delta, c.percent, sign=True)})" if c.delta is not None \
      else ""
  return f"{ours} vs {paper}{delta}"


def markdown(table: defs.Table, cells: Sequence[CellResult],
             paper: dict | None = None) -> str:
  """One line per row: per column 'ours ± std vs paper (ours - paper)'."""
  paper = paper or load_paper()
  columns = paper[table.key]["columns"]
  lines = ["| row | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
  by_row: dict[str, list[CellResult]] = {}
  for c in cells:
    by_row.setdefault(c.row, []).append(c)
  for row, row_cells in by_row.items():
    lines.append(f"| {row} | " + " | ".join(cell_text(c) for c in row_cells)
                 + " |")
  seeds = sorted({c.n for c in cells if c.n > 1})
  over = (f"mean ± sample std over {'/'.join(map(str, seeds))} fine-tuning "
          "seeds at the grid's best point on dev, " if seeds else "")
  lines += ["", f"Ours at {table.scale} scale: {over}a number without std "
            "is one run; in parentheses ours minus the paper's; '-': no "
            "result (the reasons below)."]
  if table.note:
    lines.append(table.note)
  for row in table.rows:
    if row.note:
      lines.append(f"{row.name}: {row.note}.")
  why = {}
  for c in cells:
    if c.mean is None and c.why_missing:
      why.setdefault(c.why_missing, set()).add(c.column)
  for reason, cols in sorted(why.items()):
    lines.append(f"- ({reason}): {', '.join(sorted(cols))}")
  return "\n".join(lines)


def write_csv(path: str, table: defs.Table, cells: Sequence[CellResult]):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["table", "scale", "row", "column", "ours_mean", "ours_std",
                "n", "paper", "delta", "values", "missing"])
    for c in cells:
      w.writerow([table.key, table.scale, c.row, c.column,
                  "" if c.mean is None else f"{c.mean:.6g}",
                  "" if c.std is None else f"{c.std:.6g}", c.n,
                  "" if c.paper is None else c.paper,
                  "" if c.delta is None else f"{c.delta:.6g}",
                  ";".join(f"{v:.6g}" for v in c.values), c.why_missing])


# -- figures -----------------------------------------------------------------

def encoder_params(layers: int, hidden: int, intermediate: int,
                   vocab: int, positions: int = 512, types: int = 2) -> int:
  """Parameters of a BERT encoder with its pooler (no pre-training heads)."""
  embeddings = (vocab + positions + types) * hidden + 2 * hidden
  layer = (4 * (hidden * hidden + hidden) + 2 * hidden
           + hidden * intermediate + intermediate + intermediate * hidden
           + hidden + 2 * hidden)
  return embeddings + layers * layer + hidden * hidden + hidden


def _size_params(name: str, vocab: int = 30522) -> int:
  layers, hidden, _ = map(int, re.match(r"L(\d+)_H(\d+)_A(\d+)",
                                        name).groups())
  return encoder_params(layers, hidden, 4 * hidden, vocab)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_figure5(table: defs.Table, cells: Sequence[CellResult],
                 path: str) -> str:
  """Dev accuracy against pre-training steps, one line per objective."""
  steps = defs.PAPER_STEPS if table.scale == "paper" else defs.SMALL_STEPS
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for row in ("MLM", "LTR"):
    pts = [(steps[i], c.mean, c.std or 0.0) for i, c in enumerate(
        c for c in cells if c.row == row) if c.mean is not None]
    if pts:
      xs, ys, es = zip(*pts)
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=row)
  ax.set_xlabel("pre-training steps")
  ax.set_ylabel("dev accuracy (%)" + (" (MNLI's stand-in)"
                                       if table.scale == "small" else ""))
  ax.set_title(f"Figure 5 ({table.scale} scale): mean ± std over seeds")
  if ax.get_legend_handles_labels()[0]:
    ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_table6(table: defs.Table, cells: Sequence[CellResult], root: str,
                path: str) -> str:
  """Masked-LM perplexity against encoder parameters: ours and the paper's."""
  plt = _pyplot()
  rows = {r.name: r for r in table.rows}
  ours, theirs = [], []
  for c in cells:
    if c.column != "LM ppl":
      continue
    if c.paper is not None:
      theirs.append((_size_params(c.row), c.paper, c.row))
    if c.mean is not None:
      cfg = _read(os.path.join(jobs.pretrain_dir(root, rows[c.row].pretrain),
                               "bert_config.json"))
      m = cfg["bert_jax"]
      ours.append((encoder_params(m["num_layers"], m["hidden_size"],
                                  m["intermediate_size"], m["vocab_size"]),
                   c.mean, defs.SMALL_SIZES.get(c.row, c.row)
                   if table.scale == "small" else c.row))
  fig, axes = plt.subplots(1, 2 if ours else 1, figsize=(10 if ours else 5,
                                                          3.8), squeeze=False)
  for ax, pts, title in ((axes[0][0], theirs, "paper (BERT sizes)"),
                         *(((axes[0][1], ours,
                             f"ours ({table.scale} scale)"),) if ours
                           else ())):
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=0.8)
    for x, y, label in pts:
      ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3),
                  textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("encoder parameters")
    ax.set_ylabel("held-out masked-LM perplexity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
