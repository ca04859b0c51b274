"""Creates pre-training shards from text (the original script, streaming).

    python -m bert_jax.create_pretraining_data \
        --input_file='data/corpus/*.txt.gz' --output_dir=/tmp/pretrain \
        --vocab_file=data/vocab/bert-base-uncased-vocab.txt --do_lower_case \
        --max_seq_length=128 --max_predictions_per_seq=20 \
        --masked_lm_prob=0.15 --dupe_factor=10 --short_seq_prob=0.1 \
        --random_seed=12345 [--do_whole_word_mask] [--objective=mlm_nsp]
        [--mask_ratios=0.8,0.1,0.1] [--format=array_record] [--num_workers=2]

Flags in, one call of `pretraining_data.create_pretraining_data` out (the
algorithm, the worker processes and the shard layout are described there);
`output_dir` gets `NAME-0000k-of-000NN.<format>` shards and, written last,
`manifest.json` (see `bert_jax.manifest`). With `--eval_fraction`, a
deterministic share of documents goes to separate `eval-*` shards, masked
0.8,0.1,0.1 whatever `--mask_ratios` says (held-out figures then compare
across Table 8 variants).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

from bert_jax import cli
from bert_jax import masking
from bert_jax import pretraining_data
from bert_jax import sources
from bert_jax import storage


def parse_mask_ratios(spec: str) -> tuple[float, float, float]:
  try:
    return masking.check_mask_ratios(float(x) for x in spec.split(","))
  except ValueError as e:
    raise ValueError(f"--mask_ratios={spec!r}: expected three non-negative "
                     "numbers MASK,SAME,RND summing to 1") from e


def define_flags() -> None:
  """CLI flags; defined only when run as a program (no import side effects)."""
  d = flags
  d.DEFINE_string("input_file", None, "Comma-separated globs, or tfds:NAME.")
  d.DEFINE_string("output_dir", None, "Directory for shards + manifest.")
  d.DEFINE_string("vocab_file", None, "vocab.txt or a sentencepiece .model.")
  d.DEFINE_boolean("do_lower_case", True, "Lower-case the input.")
  d.DEFINE_integer("max_seq_length", 128, "Tokens per instance.")
  d.DEFINE_integer("max_predictions_per_seq", 20, "Masked LM predictions.")
  d.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens masked.")
  d.DEFINE_integer("dupe_factor", 10, "Passes over the data (new masks).")
  d.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target.")
  d.DEFINE_integer("random_seed", 12345, "Seed.")
  d.DEFINE_boolean("do_whole_word_mask", False, "Mask whole words.")
  d.DEFINE_enum("objective", "mlm_nsp", list(pretraining_data.OBJECTIVES),
                "mlm_nsp (BERT), mlm (No NSP) or ltr (left-to-right).")
  d.DEFINE_string("mask_ratios", "0.8,0.1,0.1",
                  "MASK,SAME,RND probabilities (the paper's Table 8) of the "
                  "training split; the held-out split is always 0.8,0.1,0.1.")
  d.DEFINE_boolean("dynamic_masking", False,
                   "Store unmasked; mask in the input pipeline.")
  d.DEFINE_enum("format", "array_record", ["array_record", "tfrecord"],
                "Shard format.")
  d.DEFINE_integer("num_workers", 1, "Worker processes.")
  d.DEFINE_integer("num_shards", 4, "Output shards.")
  d.DEFINE_float("eval_fraction", 0.0, "Share of documents held out.")
  d.DEFINE_enum("input_format", "auto", list(sources.FORMATS),
                "How to read the inputs (auto: by file name).")
  d.DEFINE_string("tfds_data_dir", None, "data_dir of tfds: inputs.")
  d.DEFINE_integer("group_sentences", 5000,
                   "Sentences per work unit (the random-next pool).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  for name in ("input_file", "output_dir", "vocab_file"):
    if not f[name].value:
      raise app.UsageError(f"--{name} is required")
  try:
    m = _run_from_flags(f)
  except (ValueError, OSError) as e:
    # Bad input or flags: one line naming the file or flag, no traceback;
    # no shard was left looking complete.
    sys.exit(f"error: {e}")
  s = m["source_stats"]
  print(f"{m['train']['instances']} instances in "
        f"{len(m['train']['shards'])} shards"
        + (f", {m['eval']['instances']} eval instances" if "eval" in m
           else "")
        + f" from {s['documents']} documents in {m['seconds']} s; "
        f"repaired lines {s['repaired_lines']}, skipped: binary files "
        f"{s['skipped_binary_files']}, long lines {s['skipped_long_lines']}, "
        f"empty documents {s['skipped_empty_documents']}, unparsable "
        f"documents {s['unparsable_documents']}; truncated files "
        f"{s['truncated_files']}")


def _run_from_flags(f) -> dict[str, Any]:
  opts = pretraining_data.DataOptions(
      max_seq_length=f.max_seq_length,
      max_predictions_per_seq=f.max_predictions_per_seq,
      masked_lm_prob=f.masked_lm_prob, short_seq_prob=f.short_seq_prob,
      dupe_factor=f.dupe_factor, objective=f.objective,
      mask_ratios=parse_mask_ratios(f.mask_ratios),
      whole_word_mask=f.do_whole_word_mask,
      dynamic_masking=f.dynamic_masking)
  # A gs:// output directory is written locally and uploaded when whole;
  # a gs:// vocabulary is read from a verified local copy.
  with storage.Staging(f.output_dir) as stage:
    m = pretraining_data.create_pretraining_data(
        f.input_file, stage.local,
        storage.local_path(f.vocab_file, with_directory=False),
        f.do_lower_case, opts=opts,
        random_seed=f.random_seed, fmt=f.format, num_workers=f.num_workers,
        num_shards=f.num_shards, eval_fraction=f.eval_fraction,
        input_format=f.input_format, tfds_data_dir=f.tfds_data_dir,
        group_sentences=f.group_sentences)
    return stage.publish(m)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
