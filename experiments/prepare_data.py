"""Prepares a small-scale stand-in set: `python -m experiments.prepare_data`.

    python -m experiments.prepare_data --set=conll_shared --out_dir=ROOT/data

writes OUT_DIR/<set>/{train,dev}.tsv, labels.txt and meta.json (the
`custom` task's layout), or for `conll2003` the CoNLL files and meta.json;
see bench/real_data.py, the one home of the extraction, shared with
bench/finetune_real_data.py. The sets are in
experiments.definitions.SMALL_DATA.
"""

import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from experiments import definitions
from bench import real_data  # a namespace package: run from the repo root

_SET = flags.DEFINE_string("set", None, "One of definitions.SMALL_DATA.")
_OUT = flags.DEFINE_string("out_dir", None, "Writes OUT_DIR/<set>/.")
_CACHE = flags.DEFINE_string("cache_dir", real_data.DEFAULT_CACHE_DIR,
                             "Where a bigbench sdist would be kept.")
_SEED = flags.DEFINE_integer("seed", 0, "The split's seed.")
flags.mark_flags_as_required(["set", "out_dir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  name = _SET.value
  if name not in definitions.SMALL_DATA:
    sys.exit(f"error: --set={name!r} unknown; known: "
             f"{', '.join(definitions.SMALL_DATA)}")
  if name in definitions.UNAVAILABLE:
    sys.exit(f"error: --set={name} ({definitions.SMALL_DATA[name]}) cannot "
             "be prepared: PyPI no longer serves the bigbench 1.0.0 sdist's "
             "files")
  if name == "conll2003":
    meta = real_data.prepare_conll2003(_OUT.value)
    print(f"conll2003: {meta['splits']}")
    return
  print(real_data.describe(real_data.prepare(name, _OUT.value, _CACHE.value,
                                             seed=_SEED.value)))

if __name__ == "__main__":
  app.run(main)
