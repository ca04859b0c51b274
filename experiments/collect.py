"""A table's results beside the paper's: `python -m experiments.collect`.

    python -m experiments.collect table6 --root=workdir/experiments [--scale=small]

prints the Markdown table (per cell: ours as mean ± sample std over seeds,
the paper's number, ours minus the paper's) and writes it with a CSV under
--out_dir (default ROOT/results): TABLE_SCALE.md, TABLE_SCALE.csv; for
figure5 also figure5_SCALE.png (dev accuracy against pre-training steps,
MLM and LTR), for table6 table6_SCALE_perplexity.png (masked-LM perplexity
against model size, the paper's and ours). Cells not run yet print as "-".
"""

import os
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from bert_jax import storage
from experiments import definitions
from experiments import results

_ROOT = flags.DEFINE_string("root", "workdir/experiments",
                            "The runner's --root.")
_SCALE = flags.DEFINE_enum("scale", "small", definitions.SCALES,
                           "The scale the table ran at.")
_OUT = flags.DEFINE_string("out_dir", "", "A local directory. Default: "
                           "ROOT/results; workdir/results for a gs:// ROOT.")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("give one TABLE: "
                         + ", ".join(definitions.TABLES))
  name = argv[1]
  try:
    table = definitions.get(name, _SCALE.value)
    cells = results.collect(table, _ROOT.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  out = _OUT.value or (os.path.join("workdir", "results")
                        if storage.is_remote(_ROOT.value)
                        else os.path.join(_ROOT.value, "results"))
  if storage.is_remote(out):
    sys.exit(f"error: --out_dir={out}: results are written locally; pass a "
             "local directory")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, f"{name}_{table.scale}")
  text = results.markdown(table, cells)
  with open(stem + ".md", "w") as f:
    f.write(text + "\n")
  results.write_csv(stem + ".csv", table, cells)
  print(text)
  written = [stem + ".md", stem + ".csv"]
  if name == "figure5":
    written.append(results.plot_figure5(table, cells, stem + ".png"))
  if name == "table6":
    written.append(results.plot_table6(table, cells, _ROOT.value,
                                       stem + "_perplexity.png"))
  print("\nwrote " + ", ".join(written))


if __name__ == "__main__":
  app.run(main)
