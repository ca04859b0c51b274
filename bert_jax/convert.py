"""Checkpoint conversion: Hugging Face, Google's TF1 release, native Orbax.

    python -m bert_jax.convert --from=hf --to=bert_jax SRC DST
    python -m bert_jax.convert --from=tf1 --to=hf uncased_L-12_H-768_A-12 DST
    python -m bert_jax.convert --from=bert_jax --to=tf1 SRC DST
    python -m bert_jax.convert --from=workdir --to=hf PRETRAINING_WORKDIR DST

`--to=tf1` refuses an LTR (causal) model, and a model with the exact (erf)
GELU unless `--approximate_gelu` (TF1's 'gelu' is the tanh form).

Flags in, one `bert_jax.pretrained.convert` call out; the formats are
described there. SRC and DST may be gs:// URLs (`bert_jax.storage`).
"""

from collections.abc import Sequence

from absl import app
from absl import flags

from bert_jax import cli
from bert_jax import pretrained
from bert_jax import storage


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    raise app.UsageError(
        "usage: python -m bert_jax.convert "
        f"--from={{{','.join(pretrained.FORMATS)}}} "
        f"--to={{{','.join(pretrained.EXPORT_FORMATS)}}} SRC DST")
  src, dst = argv[1:]
  to = flags.FLAGS.to
  try:
    # gs:// in: a verified local copy; gs:// out: written locally, uploaded.
    with storage.Output(dst) as out:
      report = pretrained.convert(
          storage.local_path(src), out.local, flags.FLAGS["from"].value, to,
          approximate_gelu=flags.FLAGS.approximate_gelu)
      out.publish()
  except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    # One clear message, no traceback: these are all about the input.
    raise SystemExit(f"convert: {e}") from e
  print(report)
  print(f"wrote {to} checkpoint to {dst} (heads: "
        f"{', '.join(report.stored_heads) or 'none'})")


def define_flags() -> None:
  flags.DEFINE_enum("from", None, list(pretrained.FORMATS), "Source format.")
  flags.DEFINE_enum("to", None, list(pretrained.EXPORT_FORMATS),
                    "Destination format.")
  flags.DEFINE_bool(
      "approximate_gelu", False,
      "--to=tf1 only: export a model with the exact (erf) GELU, whose TF1 "
      "config then says 'gelu', which TF1 computes in the tanh form.")
  flags.mark_flags_as_required(["from", "to"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
