"""Checkpoint conversion: Hugging Face, Google's TF1 release, native Orbax.

    python -m bert_jax.convert --from=hf --to=bert_jax SRC DST
    python -m bert_jax.convert --from=tf1 --to=hf uncased_L-12_H-768_A-12 DST
    python -m bert_jax.convert --from=bert_jax --to=hf SRC DST

Flags in, one `bert_jax.pretrained.convert` call out; the formats are
described there.
"""

from collections.abc import Sequence

from absl import app
from absl import flags

from bert_jax import pretrained


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    raise app.UsageError("usage: python -m bert_jax.convert "
                         "--from={hf,tf1,bert_jax} --to={bert_jax,hf} SRC DST")
  src, dst = argv[1:]
  try:
    report = pretrained.convert(src, dst, flags.FLAGS["from"].value, flags.FLAGS.to)
  except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    # One clear message, no traceback: these are all about the input.
    raise SystemExit(f"convert: {e}") from e
  print(report)
  print(f"wrote {flags.FLAGS.to} checkpoint to {dst} (heads: "
        f"{', '.join(report.stored_heads) or 'none'})")


def define_flags() -> None:
  flags.DEFINE_enum("from", None, list(pretrained.FORMATS), "Source format.")
  flags.DEFINE_enum("to", None, ["bert_jax", "hf"], "Destination format.")
  flags.mark_flags_as_required(["from", "to"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
