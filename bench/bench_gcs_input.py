"""Pre-training input read from GCS against local disk (a GCS emulator).

    python bench/bench_gcs_input.py [--records 32768] [--seconds 5]
        [--batch_size 256] [--reads 300] [--output r.json]

Starts fake-gcs-server on 127.0.0.1 (tests/gcs_emulator.py), writes
realistic seq-128 ArrayRecord shards (bench/bench_input_pipeline.py's
writer), uploads them, and times, in sequences/s of numpy batches from
`bert_jax.input_pipeline` (one process, no workers):

  local        the shards on local disk
  gcs cold     `bert_jax.storage.cached_copy` (the download a fresh host
               does) and then the pipeline over the copy: sequences/s over
               the first `--seconds` of reading, download included
  gcs warm     a restarted run on the same host: the listing that finds
               the cache up to date, then the pipeline
  gcs random   what reading each record where it lies would cost: random
               ranged GETs of one record's size through gcsfs (the
               pipeline samples records uniformly over the whole data)

The emulator answers from this machine's disk in well under a millisecond;
real GCS takes tens of milliseconds a request from a TPU VM, so `gcs
random` is an upper bound there and the download rate a property of this
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _rate(data_dir: str, batch: int, seconds: float, t0: float | None = None
          ) -> tuple[float, int]:
  """Sequences/s reading batches for `seconds` (clock from t0 if given)."""
  from bert_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  ds = input_pipeline.make_dataset(data_dir, global_batch_size=batch,
                                   seed=0, process_index=0, process_count=1)
  start = time.perf_counter() if t0 is None else t0
  n = 0
  for i in range(len(ds) if hasattr(ds, "__len__") else 10**9):
    _ = ds[i]
    n += batch
    if time.perf_counter() - start > seconds:
      break
  return n / (time.perf_counter() - start), n


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--records", type=int, default=32768)
  p.add_argument("--shards", type=int, default=8)
  p.add_argument("--seconds", type=float, default=5.0)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--reads", type=int, default=300)
  p.add_argument("--output", default="")
  args = p.parse_args()
  from bench import bench_input_pipeline  # pylint: disable=g-import-not-at-top
  from bert_jax import storage  # pylint: disable=g-import-not-at-top
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top

  tmp = tempfile.mkdtemp(prefix="bench_gcs_")
  server = gcs_emulator.GcsEmulator(os.path.join(tmp, "gcs"))
  os.environ.update(server.env)
  out = {"records": args.records, "batch_size": args.batch_size}
  try:
    bench_input_pipeline._write_data(  # pylint: disable=protected-access
        os.path.join(tmp, "data"), args.records, args.shards, dynamic=False)
    local = os.path.join(tmp, "data", "array_record")
    size = sum(os.path.getsize(os.path.join(local, f))
               for f in os.listdir(local))
    out["megabytes"] = round(size / 1e6, 1)
    url = f"gs://{server.bucket}/data_128"
    storage.upload_tree(local, url)

    out["local_seq_per_s"], _ = _rate(local, args.batch_size, args.seconds)

    cache = os.path.join(tmp, "cache")
    t0 = time.perf_counter()
    copy = storage.cached_copy(url, cache)
    out["download_seconds"] = round(time.perf_counter() - t0, 3)
    out["download_mb_per_s"] = round(size / 1e6 / out["download_seconds"], 1)
    out["gcs_cold_seq_per_s"], _ = _rate(copy, args.batch_size,
                                         args.seconds, t0)
    t0 = time.perf_counter()
    copy = storage.cached_copy(url, cache)
    out["warm_check_seconds"] = round(time.perf_counter() - t0, 3)
    out["gcs_warm_seq_per_s"], _ = _rate(copy, args.batch_size,
                                         args.seconds, t0)

    fs = storage.filesystem()
    shards = sorted(fs.find(url))
    sizes = {s: fs.size(s) for s in shards}
    per_record = size // args.records
    rng = random.Random(0)
    t0 = time.perf_counter()
    for _ in range(args.reads):
      s = rng.choice(shards)
      start = rng.randrange(0, sizes[s] - per_record)
      fs.cat_file(s, start=start, end=start + per_record)
    out["gcs_random_record_reads_per_s"] = round(
        args.reads / (time.perf_counter() - t0), 1)
  finally:
    server.stop()
  for k, v in out.items():
    print(f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}")
  if args.output:
    with open(args.output, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
