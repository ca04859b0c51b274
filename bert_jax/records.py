"""Pre-training records on disk: tf.train.Example in TFRecord or ArrayRecord.

Both formats hold the same serialized `tf.train.Example` protos with the TF1
feature names of google-research/bert, so data made by the original
`create_pretraining_data.py` trains here and data made here trains there.
ArrayRecord is the same payload in a random-access container (what TFDS and
grain read), which gives a resumable, globally shuffled input pipeline.

Shards are written to a temporary name and renamed when closed, so a shard
that looks complete on disk always is. TFRecord files are written without
TensorFlow (its import costs seconds and ~500 MB in every writing process,
and prints its start-up logs), and Examples are read without it:
the framing is a little-endian uint64 length, the masked CRC32C of those 8
bytes, the data and the masked CRC32C of the data (`google-crc32c`
computes the checksums); the tests read the files back with TensorFlow.
Likewise `serialize_instances` writes the bytes of `serialize_example` for a
whole batch of instances with array operations, without protobuf.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

Format = Literal["tfrecord", "array_record"]

# The TF1 feature names, in the order the original script writes them.
FEATURE_NAMES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
FLOAT_FEATURES = frozenset({"masked_lm_weights"})

_EXTENSIONS = {"tfrecord": ".tfrecord", "array_record": ".array_record"}
_SHARD_RE = re.compile(
    r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})"
    r"\.(?P<ext>tfrecord|array_record)$")


@functools.cache
def _example_class():
  """`tf.train.Example` as a protobuf class, without TensorFlow.

  tensorflow/core/example/{example,feature}.proto (the same package, names
  and field numbers, so the wire format and the bytes are TensorFlow's),
  declared in a private descriptor pool: importing TensorFlow for its copy
  costs seconds, ~500 MB and a page of start-up logs, and a private pool
  cannot clash with TensorFlow's when both are loaded.
  """
  from google.protobuf import descriptor_pb2  # pylint: disable=g-import-not-at-top
  from google.protobuf import descriptor_pool  # pylint: disable=g-import-not-at-top
  from google.protobuf import message_factory  # pylint: disable=g-import-not-at-top
  fd = descriptor_pb2.FieldDescriptorProto
  f = descriptor_pb2.FileDescriptorProto(
      name="bert_jax/tf_example.proto", package="tensorflow", syntax="proto3")

  def message(parent, name, *fields):
    m = parent.add(name=name)
    for number, field_name, kind, label, type_name, oneof in fields:
      field = m.field.add(name=field_name, number=number, type=kind,
                          label=label)
      if type_name:
        field.type_name = type_name
      if oneof is not None:
        field.oneof_index = oneof
    return m

  rep, opt = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL
  message(f.message_type, "BytesList", (1, "value", fd.TYPE_BYTES, rep, "",
                                        None))
  message(f.message_type, "FloatList", (1, "value", fd.TYPE_FLOAT, rep, "",
                                        None))
  message(f.message_type, "Int64List", (1, "value", fd.TYPE_INT64, rep, "",
                                        None))
  feature = message(
      f.message_type, "Feature",
      (1, "bytes_list", fd.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
      (2, "float_list", fd.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
      (3, "int64_list", fd.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0))
  feature.oneof_decl.add(name="kind")
  features = message(f.message_type, "Features",
                     (1, "feature", fd.TYPE_MESSAGE, rep,
                      ".tensorflow.Features.FeatureEntry", None))
  entry = message(features.nested_type, "FeatureEntry",
                  (1, "key", fd.TYPE_STRING, opt, "", None),
                  (2, "value", fd.TYPE_MESSAGE, opt, ".tensorflow.Feature",
                   None))
  entry.options.map_entry = True
  message(f.message_type, "Example", (1, "features", fd.TYPE_MESSAGE, opt,
                                      ".tensorflow.Features", None))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.Example"))


def serialize_example(features: Mapping[str, np.ndarray]) -> bytes:
  """Serializes a dict of 1-D arrays as a `tf.train.Example`.

  Float features (`masked_lm_weights`, or any float array) become float_list,
  everything else int64_list, as in the original script.
  """
  example = _example_class()()
  for name, value in features.items():
    arr = np.asarray(value).reshape(-1)
    feature = example.features.feature[name]
    if name in FLOAT_FEATURES or np.issubdtype(arr.dtype, np.floating):
      feature.float_list.value.extend(arr.astype(np.float32).tolist())
    else:
      feature.int64_list.value.extend(arr.astype(np.int64).tolist())
  # Map fields serialise in hash order unless asked: sorted keys make the
  # bytes a function of the content (reproducible shards).
  return example.SerializeToString(deterministic=True)


# -- tf.train.Example without protobuf, a batch at a time --------------------

def _varint(n: int) -> bytes:
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


_VARINTS = [_varint(n) for n in range(1 << 16)]  # at most 3 bytes each
_SHIFTS = np.arange(0, 35, 7, dtype=np.uint64)
# The same as arrays: bytes zero-padded to 3, and byte counts.
_VARINT_TABLE = np.frombuffer(b"".join(v.ljust(3, b"\0") for v in _VARINTS),
                              np.uint8).reshape(-1, 3)
_VARINT_LENGTHS = np.array([len(v) for v in _VARINTS], np.int64)


def _len_prefixed(tag: bytes, payload: bytes) -> bytes:
  n = len(payload)
  return tag + (_VARINTS[n] if n < len(_VARINTS) else _varint(n)) + payload


def _varint_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Protobuf varints of every value of int [N, M] (0 <= v < 2**35).

  Returns the bytes of all rows, concatenated (uint8), and each row's byte
  count.
  """
  top = int(a.max(initial=0))
  if top < 0x80:  # masks, segment ids, short positions: one byte each
    return a.astype(np.uint8).reshape(-1), np.full(len(a), a.shape[1])
  if top < len(_VARINT_TABLE):  # vocabulary ids: a table look-up
    nbytes = _VARINT_LENGTHS[a]
    return _gather(_VARINT_TABLE[a].reshape(-1), np.arange(a.size) * 3,
                   nbytes.reshape(-1)), nbytes.sum(1)
  width = (top.bit_length() + 6) // 7  # bytes of the longest varint
  shifts = _SHIFTS[:width].astype(np.uint32 if width <= 4 else np.uint64)
  v = a.astype(shifts.dtype)[..., None]
  groups = ((v >> shifts) & 0x7F).astype(np.uint8)
  nbytes = 1 + (v >= (shifts.dtype.type(1) << shifts[1:])).sum(
      -1, dtype=np.int64)
  groups[np.arange(width) < nbytes[..., None] - 1] |= 0x80
  return _gather(groups.reshape(-1), np.arange(nbytes.size) * width,
                 nbytes.reshape(-1)), nbytes.sum(1)


def _gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray
            ) -> np.ndarray:
  """source[starts[0]:starts[0] + lengths[0]] ++ ... for every segment.

  One fancy index over computed positions (a boolean mask instead is ~30%
  slower: its branches mispredict on mixed lengths).
  """
  lengths = lengths.astype(np.int64)
  out_starts = np.cumsum(lengths) - lengths
  index = (np.repeat(starts.astype(np.int64) - out_starts, lengths)
           + np.arange(int(lengths.sum())))
  return source[index]


def _table(keys: np.ndarray, make) -> tuple[np.ndarray, np.ndarray,
                                            np.ndarray]:
  """Bytes `make(key)` for each distinct key, as one buffer.

  Returns (buffer uint8, each row's start in it, each row's length).
  """
  distinct, inverse = np.unique(keys, return_inverse=True)
  pieces = [make(int(k)) for k in distinct]
  lengths = np.array([len(p) for p in pieces], np.int64)
  starts = np.cumsum(lengths) - lengths
  buffer = np.frombuffer(b"".join(pieces), np.uint8)
  return buffer, starts[inverse], lengths[inverse]


_BATCH = 4096  # records assembled at a time (bounds the index arrays)


def serialize_instances(instances: dict[str, np.ndarray]) -> list[bytes]:
  """`serialize_example` of each row of a batch, byte for byte.

  `instances` maps feature names to [N, ...] arrays. Writes the
  tf.train.Example wire format directly (map entries in key order, as
  deterministic serialisation does) with whole-batch array operations: each
  record is a concatenation of byte segments (headers that depend only on a
  byte count, and the values), gathered in one index operation. The workers
  never import TensorFlow (seconds and ~500 MB each).
  """
  names = sorted(instances)
  n = len(instances[names[0]]) if names else 0
  out: list[bytes] = []
  for lo in range(0, n, _BATCH):
    out.extend(_serialize_rows({k: np.asarray(v[lo:lo + _BATCH]).reshape(
        len(v[lo:lo + _BATCH]), -1) for k, v in instances.items()}, names))
  return out


def _serialize_rows(arrays: dict[str, np.ndarray], names: list[str]
                    ) -> list[bytes]:
  n = len(arrays[names[0]])
  buffers: list[np.ndarray] = []
  seg_starts: list[np.ndarray] = []  # per segment kind: [N] global starts
  seg_lengths: list[np.ndarray] = []
  base = 0

  def add(buffer, starts, lengths):
    nonlocal base
    buffers.append(buffer)
    seg_starts.append(starts + base)
    seg_lengths.append(np.broadcast_to(lengths, (n,)))
    base += len(buffer)

  body = np.zeros(n, np.int64)
  for name in names:
    a = arrays[name]
    if name in FLOAT_FEATURES or a.dtype.kind == "f":
      values = a.astype("<f4").view(np.uint8).reshape(-1)
      sizes = np.full(n, 4 * a.shape[1], np.int64)
      tag = b"\x12"  # Feature.float_list
    elif a.shape[1] and (a.min() < 0 or a.max() >= 1 << 35):
      return [serialize_example(
          {k: v[i] for k, v in arrays.items()}) for i in range(n)]
    else:
      values, sizes = _varint_rows(a)
      tag = b"\x1a"  # Feature.int64_list
    key = _len_prefixed(b"\x0a", name.encode())

    def header(size, key=key, tag=tag):
      # Everything before the values depends only on their byte count.
      inner = _len_prefixed(b"\x0a", bytes(size)) if size else b""
      entry = key + _len_prefixed(b"\x12", _len_prefixed(tag, inner))
      full = _len_prefixed(b"\x0a", entry)
      return full[:len(full) - size]

    h_buf, h_start, h_len = _table(sizes, header)
    add(h_buf, h_start, h_len)
    add(values, np.cumsum(sizes) - sizes, sizes)
    body += h_len + sizes
  o_buf, o_start, o_len = _table(body, lambda size: _len_prefixed(
      b"\x0a", bytes(size))[:-size or None])
  # Segment order within a record: outer header, then (header, values) per
  # feature.
  starts = np.stack([o_start + base] + seg_starts, axis=1)
  lengths = np.stack([o_len] + seg_lengths, axis=1)
  buffers.append(o_buf)
  blob = _gather(np.concatenate(buffers), starts.reshape(-1),
                 lengths.reshape(-1)).tobytes()
  ends = np.cumsum(lengths.sum(1)).tolist()
  return [blob[i:j] for i, j in zip([0] + ends[:-1], ends)]


def parse_example(data: bytes) -> dict[str, np.ndarray]:
  """Parses one serialized `tf.train.Example` into int32/float32 arrays."""
  example = _example_class().FromString(data)
  out = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
      out[name] = np.asarray(feature.float_list.value, dtype=np.float32)
    elif kind == "int64_list":
      out[name] = np.asarray(feature.int64_list.value, dtype=np.int32)
    else:
      raise ValueError(f"feature {name!r} has unsupported kind {kind!r}")
  return out


def parse_examples(data: Sequence[bytes],
                   features: Sequence[tuple[str, bool, int]]
                   ) -> dict[str, np.ndarray]:
  """Fixed-length features of serialized `tf.train.Example`s, batched.

  What `tf.io.parse_example` with `FixedLenFeature`s returns, without
  TensorFlow: `features` lists (name, is_float, length); the result maps
  each name to an [N, length] float32 or int32 array. A record that lacks
  a feature, or holds another length or kind, is a ValueError.
  """
  example = _example_class()
  columns: dict[str, list[Any]] = {name: [] for name, _, _ in features}
  for record in data:
    feature = example.FromString(record).features.feature
    for name, is_float, _ in features:
      # A missing name reads as an empty list: caught by the shape check.
      f = feature[name]
      columns[name].append(f.float_list.value if is_float
                           else f.int64_list.value)
  out = {}
  for name, is_float, length in features:
    try:
      a = np.array(columns[name], np.float32 if is_float else np.int64)
    except ValueError as e:  # ragged: some record has another length
      raise ValueError(f"feature {name!r}: not {length} values in every "
                       "record") from e
    if a.shape != (len(data), length):
      raise ValueError(f"feature {name!r}: {a.shape[1:]} values a record, "
                       f"expected {length}")
    out[name] = a if is_float else a.astype(np.int32)
  return out


def shard_filename(name: str, index: int, num_shards: int,
                   fmt: Format) -> str:
  """`NAME-00000-of-000NN.tfrecord` / `.array_record`."""
  if fmt not in _EXTENSIONS:
    raise ValueError(f"unknown record format {fmt!r}; "
                     f"expected one of {sorted(_EXTENSIONS)}")
  if not 0 <= index < num_shards:
    raise ValueError(f"shard index {index} not in [0, {num_shards})")
  return f"{name}-{index:05d}-of-{num_shards:05d}{_EXTENSIONS[fmt]}"


def parse_shard_filename(path: str) -> dict[str, object] | None:
  """Returns {name, index, count, format} for a shard file name, else None."""
  m = _SHARD_RE.match(os.path.basename(path))
  if not m:
    return None
  return {
      "name": m["name"],
      "index": int(m["index"]),
      "count": int(m["count"]),
      "format": "tfrecord" if m["ext"] == "tfrecord" else "array_record",
  }


def format_of(path: str) -> Format:
  """The record format of a file, from its extension."""
  if path.endswith(".tfrecord") or ".tfrecord-" in path:
    return "tfrecord"
  if path.endswith(".array_record") or ".array_record-" in path:
    return "array_record"
  raise ValueError(
      f"{path}: cannot tell the record format; expected a .tfrecord or "
      ".array_record file")


def _masked_crc32c(data: bytes) -> int:
  import google_crc32c  # pylint: disable=g-import-not-at-top
  crc = google_crc32c.value(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class _TFRecordFile:
  """TFRecord framing (as TensorFlow's `TFRecordWriter`, uncompressed)."""

  def __init__(self, path: str):
    self._file = open(path, "wb")

  def write(self, record: bytes) -> None:
    length = struct.pack("<Q", len(record))
    self._file.write(b"".join((
        length, struct.pack("<I", _masked_crc32c(length)), record,
        struct.pack("<I", _masked_crc32c(record)))))

  def close(self) -> None:
    self._file.close()


class RecordWriter:
  """Writes serialized records to `path` via a temporary file + rename.

  Use as a context manager. On an exception inside the block the temporary
  file is removed and `path` is never created.
  """

  def __init__(self, path: str, fmt: Format | None = None):
    self.path = path
    self.fmt: Format = fmt or format_of(path)
    self._tmp = f"{path}.incomplete-{os.getpid()}"
    self.count = 0
    self._writer = None

  def __enter__(self) -> "RecordWriter":
    if self.fmt == "tfrecord":
      self._writer = _TFRecordFile(self._tmp)
    else:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      # group_size:1 keeps single records randomly accessible cheaply;
      # snappy writes ~4x faster than the default zstd for 2% more bytes
      # (measured on pre-training records), and reads as fast.
      self._writer = array_record_module.ArrayRecordWriter(
          self._tmp, "group_size:1,snappy")
    return self

  def write(self, record: bytes) -> None:
    self._writer.write(record)
    self.count += 1

  def __exit__(self, exc_type, exc, tb) -> None:
    self._writer.close()
    if exc_type is None:
      os.replace(self._tmp, self.path)
    elif os.path.exists(self._tmp):
      os.remove(self._tmp)


def read_records(path: str) -> Iterator[bytes]:
  """Yields the serialized records of one shard, in order."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such record file")
  if format_of(path) == "tfrecord":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      yield record
  else:
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    reader = array_record_module.ArrayRecordReader(path)
    try:
      n = reader.num_records()
      for start in range(0, n, 1024):
        yield from reader.read(list(range(start, min(n, start + 1024))))
    finally:
      reader.close()
