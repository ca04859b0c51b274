"""Per-token features from chosen layers, in the original's JSON-lines schema.

    python -m bert_jax.extract_features --checkpoint=PATH \
        --input_file=input.txt --output_file=out.jsonl --layers=-1,-2,-3,-4

PATH may be a bert_jax model directory, a Hugging Face directory or a TF1
`bert_model.ckpt` (detected). The input is text (plain, .gz or .bz2); each
of its lines gives one output line:

    {"linex_index": i, "features": [{"token": "[CLS]", "layers":
      [{"index": -1, "values": [...]}, ...]}, ...]}

exactly as google-research/bert's extract_features.py writes it (including
its "linex_index" key), so tools written for it keep working. A line
`A ||| B` is a sentence pair. Layer indexes count encoder layers as the
original does (-1 = last layer; 0 = first layer, the embeddings are not a
layer). Over-long inputs are truncated and counted, never an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging

from bert_jax import cli
from bert_jax import sources
from bert_jax import storage

PAIR_SEPARATOR = " ||| "


def parse_layers(spec: str, num_layers: int) -> list[int]:
  try:
    layers = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError as e:
    raise ValueError(f"--layers={spec!r}: expected comma-separated "
                     "integers") from e
  bad = [l for l in layers if not -num_layers <= l < num_layers]
  if not layers or bad:
    raise ValueError(f"--layers={spec!r}: indexes must be in "
                     f"[{-num_layers}, {num_layers - 1}] for a "
                     f"{num_layers}-layer model")
  return layers


def split_pair(line: str) -> tuple[str, str | None]:
  # The original splits on the regex "^(.*) \|\|\| (.*)$" (greedy).
  if PAIR_SEPARATOR in line:
    a, b = line.rsplit(PAIR_SEPARATOR, 1)
    return a, b
  return line, None


class FeatureExtractor:
  """A loaded encoder and tokenizer, turning lines into feature records."""

  def __init__(self, checkpoint: str, layers: str = "-1,-2,-3,-4",
               max_seq_length: int = 128, batch_size: int = 32,
               vocab_file: str | None = None, do_lower_case: bool = True,
               dtype: str = "float32"):
    import jax  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
    from bert_jax import model as model_lib  # pylint: disable=g-import-not-at-top
    from bert_jax import tokenization  # pylint: disable=g-import-not-at-top

    cfg, params, report = pretrained.load_pretrained(checkpoint, task="encoder")
    logging.info("%s", report)
    if max_seq_length > cfg.max_position_embeddings:
      raise ValueError(f"--max_seq_length={max_seq_length} exceeds the "
                       f"model's max_position_embeddings="
                       f"{cfg.max_position_embeddings}")
    vocab_file = vocab_file or pretrained.find_vocab(
        checkpoint if os.path.isdir(checkpoint) else
        os.path.dirname(checkpoint))
    if vocab_file is None:
      raise FileNotFoundError(f"{checkpoint}: no vocab.txt beside the "
                              "checkpoint; pass --vocab_file")
    self.tokenizer = tokenization.create_tokenizer(vocab_file, do_lower_case)
    self.cfg = cfg.replace(dtype=dtype)
    self.layers = parse_layers(layers, cfg.num_layers)
    self.max_seq_length = max_seq_length
    self.batch_size = batch_size
    self.num_truncated = 0

    # Only the structure is needed from the module: the values are loaded.
    graphdef, state = nnx.split(nnx.eval_shape(
        lambda: model_lib.BertModel(self.cfg, rngs=nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, params)
    # Hidden states are [embeddings, layer 0, ..., layer L-1]; keep the
    # asked layers only, so just those leave the device.
    picked = np.array([1 + (l % cfg.num_layers) for l in self.layers])

    @jax.jit
    def forward(state, ids, seg, mask):
      out = nnx.merge(graphdef, state)(ids, seg, mask,
                                       output_hidden_states=True)
      return out.hidden_states[picked].astype("float32")

    self._forward = lambda *a: forward(state, *a)

  def _encode(self, lines: Sequence[str]) -> dict:
    enc = self.tokenizer.encode_pair_batch(
        [split_pair(l) for l in lines], self.max_seq_length)
    self.num_truncated += int(np.sum(enc["truncated"]))
    return enc

  def features(self, lines: Sequence[str],
               first_index: int = 0) -> Iterator[dict]:
    """Feature records for `lines`, in order, in batches."""
    for start in range(0, len(lines), self.batch_size):
      chunk = list(lines[start:start + self.batch_size])
      enc = self._encode(chunk)
      n = len(chunk)
      pad = self.batch_size - n  # fixed shapes: one compilation
      arrays = [np.pad(enc[k], ((0, pad), (0, 0)))
                for k in ("input_ids", "segment_ids", "input_mask")]
      hidden = np.asarray(self._forward(*arrays))  # [layers, B, L, D]
      for b in range(n):
        tokens = enc["tokens"][b]
        yield {
            "linex_index": first_index + start + b,
            "features": [{
                "token": token,
                "layers": [{
                    "index": layer,
                    "values": [round(float(v), 6)
                               for v in hidden[j, b, t]],
                } for j, layer in enumerate(self.layers)],
            } for t, token in enumerate(tokens)],
        }


def _read_lines(path: str, chunk: int = 4096) -> Iterator[list[str]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"--input_file: {path} does not exist")
  with sources.open_text(path) as f:
    lines = []
    for line in f:
      lines.append(line.strip())
      if len(lines) == chunk:
        yield lines
        lines = []
    if lines:
      yield lines


def run(checkpoint: str, input_file: str, output_file: str,
        **kwargs) -> int:
  """Writes output_file (via a temporary file); returns lines written.

  Each path may be a gs:// URL: the checkpoint and input are read from
  verified local copies, the output is written locally and uploaded.
  """
  extractor = FeatureExtractor(storage.local_path(checkpoint), **kwargs)
  input_file = storage.local_path(input_file, with_directory=False)
  count = 0
  with storage.Output(output_file) as target:
    tmp = target.local + ".incomplete"
    try:
      with open(tmp, "w", encoding="utf-8") as out:
        for lines in _read_lines(input_file):
          for record in extractor.features(lines, first_index=count):
            out.write(json.dumps(record) + "\n")
          count += len(lines)
          logging.info("extracted features for %d lines", count)
      os.replace(tmp, target.local)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    target.publish()
  if extractor.num_truncated:
    logging.warning("%d of %d inputs were longer than max_seq_length=%d and "
                    "were truncated", extractor.num_truncated, count,
                    extractor.max_seq_length)
  print(f"wrote features of {count} lines ({extractor.num_truncated} "
        f"truncated) to {output_file}")
  return count


def define_flags() -> None:
  """CLI flags; defined only when run as a program (no import side effects)."""
  flags.DEFINE_string("checkpoint", None,
                      "bert_jax, Hugging Face or TF1 checkpoint.")
  flags.DEFINE_string("input_file", None, "One text per line.")
  flags.DEFINE_string("output_file", None, "JSON lines to write.")
  flags.DEFINE_string("layers", "-1,-2,-3,-4",
                      "Comma-separated encoder layer indexes.")
  flags.DEFINE_integer("max_seq_length", 128,
                       "Tokens per sequence, [CLS]/[SEP] included.")
  flags.DEFINE_integer("batch_size", 32, "Sequences per forward pass.")
  flags.DEFINE_string("vocab_file", None,
                      "Vocab (default: the one beside the checkpoint).")
  flags.DEFINE_boolean("do_lower_case", True, "Lower-case the input.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                    "Compute dtype.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  for name in ("checkpoint", "input_file", "output_file"):
    if not f[name].value:
      raise app.UsageError(f"--{name} is required")
  run(f.checkpoint, f.input_file, f.output_file, layers=f.layers,
      max_seq_length=f.max_seq_length, batch_size=f.batch_size,
      vocab_file=f.vocab_file, do_lower_case=f.do_lower_case, dtype=f.dtype)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
