"""The README's TPU v3 table: `bert_jax.plan` for BERT-Base and BERT-Large.

    python bench/plan_table.py [--topologies=v3-8,v3-32,v3-128]

Batch 256 (the paper's), seq 128 (20 predictions) and seq 512 (80), bf16;
each cell is what `python -m bert_jax.plan --search` finds: the preferred
mesh and micro-batch count that fits in 16 GiB per core. Writes
bench/results/plan_table.md as it goes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import plan  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import pretrain  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--topologies", default="v3-8,v3-32,v3-128")
  p.add_argument("--models", default="base,large")
  p.add_argument("--max_candidates", type=int, default=4)
  p.add_argument("--out", default="bench/results/plan_table.md")
  args = p.parse_args()
  plan._prepare_environment()  # pylint: disable=protected-access
  rows = ["| model | seq | topology | mesh (data, fsdp, tensor) | micro-batches "
          "| GiB per core (of 16) | fits | model FLOPs/step | compile s |",
          "|---|---|---|---|---|---|---|---|---|"]
  done = {}
  if os.path.exists(args.out):  # resume: keep the cells that fit already
    for line in open(args.out).read().splitlines()[2:]:
      cells = [c.strip() for c in line.strip("|").split("|")]
      if len(cells) > 6 and cells[6] == "yes":
        done[tuple(cells[:3])] = line
  for model in args.models.split(","):
    for seq, preds in ((128, 20), (512, 80)):
      for topology in args.topologies.split(","):
        if (model, str(seq), topology) in done:
          rows.append(done[(model, str(seq), topology)])
          continue
        config = pretrain.get_config(model)
        with config.unlocked():
          config.max_seq_length = seq
          config.max_predictions_per_seq = preds
        try:
          r = plan.plan(config, topology, search=True,
                        max_candidates=args.max_candidates,
                        log=lambda m: print("  " + m, flush=True))
          mesh = r["mesh"]
          rows.append(
              f"| {model} | {seq} | {topology} | {mesh['data']}, "
              f"{mesh['fsdp']}, {mesh['tensor']} | {r['micro_batches']} | "
              f"{r['per_core_bytes'] / 2**30:.2f} | "
              f"{'yes' if r['fits'] else 'no'} | "
              f"{r['flops_per_step']:.3g} | {r['compile_seconds']} |")
        except Exception as e:  # pylint: disable=broad-except
          rows.append(f"| {model} | {seq} | {topology} | error: {e} |"
                      " | | | | |")
        print(rows[-1], flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
          f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
