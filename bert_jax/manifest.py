"""The manifest of a pre-training data directory (`manifest.json`).

Written last by `pretraining_data.create_pretraining_data` and by
`input_pipeline.convert_tfrecords`, so a directory holding one is complete;
read by the input pipeline and the trainer. Its sections:

- `train`, `eval`: each split's `shards` (`file`, `records`, and `sha256`
  or the `source` it was converted from) and counts (`instances`, ...);
- `format`: `array_record` or `tfrecord`;
- `options`: how the records were made (objective, lengths, masking, ...);
- `vocab`: the vocabulary's file, size and special ids (`vocab_section`);
- `inputs`, `source_stats`, `seconds` for data made from text.

Data made by Google's original script has no manifest: `read` returns None.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from bert_jax import tokenization

FILENAME = "manifest.json"


def read(data_dir: str) -> dict[str, Any] | None:
  """`data_dir/manifest.json`, or None (e.g. data from the TF1 script)."""
  path = os.path.join(data_dir, FILENAME)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def write(data_dir: str, manifest: dict[str, Any]) -> None:
  """Writes `data_dir/manifest.json` whole or not at all (temp + rename)."""
  path = os.path.join(data_dir, FILENAME)
  tmp = path + ".incomplete"
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, path)


def sha256(path: str) -> str:
  """The hex SHA-256 of a file (the manifest's checksum of shards and
  vocabularies), read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def vocab_section(vocab_file: str, tokenizer=None, *,
                  checksum: bool = True) -> dict[str, Any]:
  """The manifest's `vocab` entry: file, sha256, size and special ids.

  Args:
    vocab_file: a vocab.txt or a SentencePiece .model.
    tokenizer: one already loaded from `vocab_file` (saves loading it again).
    checksum: include the file's sha256 (converted TFRecord data has none).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the vocabulary lacks [CLS], [SEP] or [MASK].
  """
  if tokenizer is None:
    if not os.path.isfile(vocab_file):
      raise FileNotFoundError(f"{vocab_file}: no such vocab file")
    tokenizer = tokenization.create_tokenizer(vocab_file)
  ids = tokenizer.special_ids
  missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in ids]
  if missing:
    raise ValueError(f"{vocab_file}: no {missing} entry; not a BERT vocab")
  section: dict[str, Any] = {"file": os.path.abspath(vocab_file)}
  if checksum:
    section["sha256"] = sha256(vocab_file)
  section.update(size=tokenizer.vocab_size, cls_id=ids["[CLS]"],
                 sep_id=ids["[SEP]"], mask_id=ids["[MASK]"],
                 pad_id=ids.get("[PAD]", 0))
  return section
