"""Input pipeline: order, hosts, resume, phases, dynamic masking, TFRecord.

Shards are written here with `records.RecordWriter` (random but valid
examples, each with a `record_id` feature so a batch row can be traced back
to its record); expected values come from `records.parse_example` on the
written bytes and from counting, never from the pipeline itself.
"""

import glob
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax import input_pipeline as ip
from bert_jax import manifest as manifest_lib
from bert_jax import masking
from bert_jax import records

CLS, SEP, MASK, PAD = 101, 102, 103, 0
VOCAB = 30522
SPECIAL = (CLS, SEP, PAD)


def _example(rng, i, seq, pred, *, dynamic=False, ltr=False, record_id=True):
  n = int(rng.integers(seq // 2, seq + 1))
  ids = np.zeros(seq, np.int64)
  ids[:n] = rng.integers(1000, 2000, n)
  half = n // 2
  ids[0], ids[half], ids[n - 1] = CLS, SEP, SEP
  mask = (np.arange(seq) < n).astype(np.int64)
  seg = ((np.arange(seq) > half) & (np.arange(seq) < n)).astype(np.int64)
  ex = {"input_ids": ids, "input_mask": mask, "segment_ids": seg}
  if not ltr:
    if dynamic:
      ex["word_start"] = (rng.random(seq) < 0.7).astype(np.int64)
    else:
      k = min(pred, max(1, round(n * 0.15)))
      pos = np.zeros(pred, np.int64)
      pos[:k] = np.sort(rng.choice(np.arange(1, half), k, replace=False))
      ex["masked_lm_positions"] = pos
      ex["masked_lm_ids"] = np.where(np.arange(pred) < k, ids[pos], 0)
      ex["masked_lm_weights"] = (np.arange(pred) < k).astype(np.float32)
    ex["next_sentence_labels"] = np.array([rng.integers(0, 2)])
  if record_id:
    ex["record_id"] = np.array([i])
  return ex


def write_shards(directory, num_records, num_shards=3, seq=16, pred=4, *,
                 fmt="array_record", name="train", start=0, **kwargs):
  """Writes shards round-robin; returns {record_id: parsed features}."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(start + 7 * seq)
  serialized = [records.serialize_example(
      _example(rng, start + i, seq, pred, **kwargs))
                for i in range(num_records)]
  for s in range(num_shards):
    path = os.path.join(directory, records.shard_filename(
        name, s, num_shards, fmt))
    with records.RecordWriter(path, fmt) as w:
      for rec in serialized[s::num_shards]:
        w.write(rec)
  return {start + i: records.parse_example(r)
          for i, r in enumerate(serialized)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("static") / "d")
  return d, write_shards(d, 60)


def ids_of(batch):
  return [int(x) for x in np.asarray(batch["record_id"])[:, 0]]


def same_batches(a, b):
  return all(a_i.keys() == b_i.keys() and all(
      np.array_equal(np.asarray(a_i[k]), np.asarray(b_i[k])) for k in a_i)
             for a_i, b_i in zip(a, b, strict=True))


def make(path, **kwargs):
  kwargs = {"global_batch_size": 8, "seed": 3, "process_index": 0,
            "process_count": 1, **kwargs}
  return ip.make_dataset(path, **kwargs)


def test_batches_hold_the_records_as_written(data):
  d, written = data
  ds = make(d, max_seq_length=16)
  for step in (0, 5, 11):
    batch = ds[step]
    assert batch["input_ids"].shape == (8, 16)
    assert batch["input_ids"].dtype == np.int32
    assert batch["masked_lm_weights"].dtype == np.float32
    for row, rid in enumerate(ids_of(batch)):
      for k, v in written[rid].items():
        np.testing.assert_array_equal(batch[k][row], v)


def test_each_epoch_is_a_new_permutation_of_all_records(data):
  d, written = data
  ds = make(d, global_batch_size=6)  # 60 records: 10 batches an epoch
  epochs = [sum((ids_of(ds[s]) for s in range(e * 10, e * 10 + 10)), [])
            for e in range(3)]
  for e in epochs:
    assert sorted(e) == sorted(written)
  assert epochs[0] != sorted(written)
  assert len({tuple(e) for e in epochs}) == 3


def test_batches_run_across_epoch_boundaries(data):
  d, written = data
  ds = make(d, global_batch_size=7)  # 60 records: no whole batches/epoch
  stream = sum((ids_of(ds[s]) for s in range(17)), [])  # 119 records
  assert sorted(stream[:60]) == sorted(written)
  assert len(set(stream[60:])) == 59


def test_order_is_a_function_of_seed_and_step(data):
  d, _ = data
  it = ip.GlobalBatchIterator(make(d), None)
  walked = [next(it) for _ in range(7)]
  fresh = make(d)
  assert same_batches(walked[5:], [fresh[5], fresh[6]])
  jumped = ip.GlobalBatchIterator(make(d), None, start_step=5)
  assert same_batches(walked[5:], [next(jumped), next(jumped)])
  other = make(d, seed=4)
  assert ids_of(other[5]) != ids_of(walked[5])


def test_hosts_read_disjoint_rows_of_the_same_global_batch(data):
  d, written = data
  one = make(d, global_batch_size=12)
  hosts = [make(d, global_batch_size=12, process_index=p, process_count=4)
           for p in range(4)]
  seen = []
  for step in range(5):  # one epoch
    rows = [ids_of(h[step]) for h in hosts]
    assert all(len(r) == 3 for r in rows)
    assert sum(rows, []) == ids_of(one[step])
    seen += sum(rows, [])
  assert sorted(seen) == sorted(written)
  with pytest.raises(ValueError, match="multiple of the 5 processes"):
    make(d, global_batch_size=12, process_index=0, process_count=5)


def test_global_arrays_on_a_mesh_of_8_devices(data):
  d, _ = data
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
  sharding = NamedSharding(mesh, P(("data", "fsdp")))
  ds = make(d)
  batch = next(ip.GlobalBatchIterator(ds, sharding, start_step=2))
  expected = ds[2]
  for k, v in batch.items():
    assert isinstance(v, jax.Array)
    assert v.shape == expected[k].shape
    assert v.sharding.is_equivalent_to(sharding, v.ndim)
    # 4 batch shards, each replicated over the 2 'tensor' devices.
    assert {s.data.shape[0] for s in v.addressable_shards} == {2}
    np.testing.assert_array_equal(np.asarray(v), expected[k])


def test_resume_through_an_orbax_checkpoint_gives_the_same_batches(
    data, tmp_path):
  d, _ = data
  baseline = ip.GlobalBatchIterator(make(d), None)
  expected = [next(baseline) for _ in range(12)]

  it = ip.GlobalBatchIterator(make(d), None)
  first = [next(it) for _ in range(5)]
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"),
                               item_names=("data",))
  mngr.save(5, args=ocp.args.Composite(data=ocp.args.JsonSave(
      it.get_state())))
  mngr.wait_until_finished()
  it.close()
  del it

  restored = ocp.CheckpointManager(str(tmp_path / "ckpt"),
                                   item_names=("data",)).restore(
                                       5, args=ocp.args.Composite(
                                           data=ocp.args.JsonRestore()))
  resumed = ip.GlobalBatchIterator(make(d), None)
  resumed.set_state(restored["data"])
  rest = [next(resumed) for _ in range(7)]
  assert same_batches(first + rest, expected)


def test_a_state_from_other_data_is_refused(data):
  d, _ = data
  it = ip.GlobalBatchIterator(make(d), None)
  next(it)
  state = it.get_state()
  other = ip.GlobalBatchIterator(make(d, seed=9), None)
  with pytest.raises(ValueError, match="seed was 3, is 9"):
    other.set_state(state)
  with pytest.raises(ValueError, match="global_batch_size was 8, is 4"):
    ip.GlobalBatchIterator(make(d, global_batch_size=4), None).set_state(
        state)


def test_two_phases_resume_on_either_side_of_the_switch(tmp_path):
  d1, d2 = str(tmp_path / "s16"), str(tmp_path / "s32")
  write_shards(d1, 40, seq=16)
  write_shards(d2, 40, seq=32, pred=6, start=1000)

  def phased():
    return ip.PhasedIterator([ip.GlobalBatchIterator(make(d1), None),
                              ip.GlobalBatchIterator(make(d2), None)], [3])

  it = phased()
  expected = [next(it) for _ in range(7)]
  assert [b["input_ids"].shape[1] for b in expected] == [16] * 3 + [32] * 4
  assert min(ids_of(expected[3])) >= 1000
  for stop in (2, 3, 5):
    it = phased()
    head = [next(it) for _ in range(stop)]
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint holds it
    resumed = phased()
    resumed.set_state(state)
    assert resumed.phase_at(stop) == int(stop >= 3)
    tail = [next(resumed) for _ in range(7 - stop)]
    assert same_batches(head + tail, expected)


@pytest.fixture(scope="module")
def dynamic_data(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("dynamic") / "d")
  return d, write_shards(d, 32, seq=32, pred=5, dynamic=True)


SPEC = ip.MaskingSpec(vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL,
                      masked_lm_prob=0.15, max_predictions_per_seq=5)


def test_dynamic_masks_are_valid(dynamic_data):
  d, written = dynamic_data
  ds = make(d, dynamic_masking=SPEC)
  counts = {"mask": 0, "same": 0, "random": 0}
  for step in range(8):
    batch = ds[step]
    assert "word_start" not in batch
    for row, rid in enumerate(ids_of(batch)):
      orig = written[rid]["input_ids"]
      n = int(written[rid]["input_mask"].sum())
      k = masking.num_to_predict(n, 0.15, 5)
      pos = batch["masked_lm_positions"][row]
      w = batch["masked_lm_weights"][row]
      np.testing.assert_array_equal(w, np.arange(5) < k)
      chosen = pos[:k]
      assert np.all(np.diff(chosen) > 0) and np.all(pos[k:] == 0)
      assert np.all(chosen < n)
      assert not np.isin(orig[chosen], SPECIAL).any()
      np.testing.assert_array_equal(batch["masked_lm_ids"][row][:k],
                                    orig[chosen])
      new = batch["input_ids"][row]
      untouched = np.ones(32, bool)
      untouched[chosen] = False
      np.testing.assert_array_equal(new[untouched], orig[untouched])
      counts["mask"] += int(np.sum(new[chosen] == MASK))
      counts["same"] += int(np.sum(new[chosen] == orig[chosen]))
      counts["random"] += int(np.sum((new[chosen] != MASK) &
                                     (new[chosen] != orig[chosen])))
      for k_ in ("input_mask", "segment_ids", "next_sentence_labels"):
        np.testing.assert_array_equal(batch[k_][row], written[rid][k_])
  total = sum(counts.values())
  assert 0.65 < counts["mask"] / total < 0.95  # 0.8 of ~200 predictions
  assert counts["random"] > 0 and counts["same"] > 0


def _masks_by_record(ds, steps):
  out = {}
  for step in steps:
    batch = ds[step]
    for row, rid in enumerate(ids_of(batch)):
      out[rid] = (tuple(batch["masked_lm_positions"][row]),
                  tuple(batch["input_ids"][row]))
  return out


def test_dynamic_masks_depend_on_seed_and_step_only(dynamic_data):
  d, _ = dynamic_data
  a = make(d, dynamic_masking=SPEC)
  it = ip.GlobalBatchIterator(make(d, dynamic_masking=SPEC), None,
                              start_step=6)
  assert same_batches([a[6], a[7]], [next(it), next(it)])
  # Hosts draw the masks of their rows as a single process would.
  hosts = [make(d, dynamic_masking=SPEC, process_index=p, process_count=2)
           for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([h[3]["input_ids"] for h in hosts]), a[3]["input_ids"])


def test_dynamic_masks_change_every_epoch(dynamic_data):
  d, written = dynamic_data
  ds = make(d, dynamic_masking=SPEC)  # 32 records: 4 batches an epoch
  epoch0, epoch1 = _masks_by_record(ds, range(4)), _masks_by_record(
      ds, range(4, 8))
  assert epoch0.keys() == epoch1.keys() == written.keys()
  differ = sum(epoch0[r] != epoch1[r] for r in written)
  assert differ >= 28


def test_whole_word_dynamic_masking_masks_whole_words(dynamic_data):
  d, written = dynamic_data
  spec = ip.MaskingSpec(**{**SPEC.__dict__, "whole_word_mask": True})
  batch = make(d, dynamic_masking=spec)[0]
  for row, rid in enumerate(ids_of(batch)):
    n = int(written[rid]["input_mask"].sum())
    starts = written[rid]["word_start"].astype(bool)
    chosen = set(batch["masked_lm_positions"][row][
        batch["masked_lm_weights"][row] > 0].tolist())
    special = np.isin(written[rid]["input_ids"], SPECIAL)
    for p in chosen:
      # A continuation piece is never masked without its word start.
      if not starts[p] and p > 0 and not special[p - 1]:
        assert p - 1 in chosen
      if p + 1 < n and not starts[p + 1] and not special[p + 1]:
        assert p + 1 in chosen


def test_masking_mode_must_match_the_records(data, dynamic_data):
  with pytest.raises(ValueError, match="already masked"):
    make(data[0], dynamic_masking=SPEC)
  with pytest.raises(ValueError, match="unmasked"):
    make(dynamic_data[0])


def test_masking_spec_from_manifest():
  manifest = {"options": {"masking": "dynamic", "masked_lm_prob": 0.2,
                          "max_predictions_per_seq": 7,
                          "mask_ratios": [1.0, 0.0, 0.0],
                          "do_whole_word_mask": True},
              "vocab": {"size": 99, "mask_id": 4, "cls_id": 2, "sep_id": 3,
                        "pad_id": 0}}
  spec = ip.MaskingSpec.from_manifest(manifest)
  assert spec == ip.MaskingSpec(99, 4, (2, 3, 0), 0.2, 7, (1.0, 0.0, 0.0),
                                True)
  del manifest["vocab"]["mask_id"]
  with pytest.raises(ValueError, match="'mask_id'"):
    ip.MaskingSpec.from_manifest(manifest)
  with pytest.raises(ValueError, match="mask_ratios"):
    ip.MaskingSpec(99, 4, (2, 3, 0), mask_ratios=(0.5, 0.1, 0.1))
  manifest["options"]["masking"] = "static"
  assert ip.MaskingSpec.from_manifest(manifest) is None
  assert ip.MaskingSpec.from_manifest(None) is None


def test_evaluation_order_reads_every_record_once_in_shard_order(data):
  d, written = data
  ds = make(d, shuffle=False, num_epochs=1, global_batch_size=7)
  assert len(ds) == 60 // 7
  stream = sum((ids_of(ds[s]) for s in range(len(ds))), [])
  # Shard s holds records s, s + 3, ...; shards are read one after another.
  in_shard_order = [i for s in range(3) for i in range(s, 60, 3)]
  assert stream == in_shard_order[:56]
  it = ip.GlobalBatchIterator(ds, None)
  assert len(list(it)) == 8


def test_ltr_records(tmp_path):
  written = write_shards(str(tmp_path), 16, ltr=True)
  batch = make(str(tmp_path))[0]
  assert set(batch) == {"input_ids", "input_mask", "segment_ids",
                        "record_id"}
  np.testing.assert_array_equal(batch["input_ids"][0],
                                written[ids_of(batch)[0]]["input_ids"])


def test_tf1_tfrecords_are_converted_and_train_here(tmp_path):
  src = str(tmp_path / "tf1")
  written = write_shards(src, 30, num_shards=2, fmt="tfrecord",
                         record_id=False)
  with pytest.raises(FileNotFoundError, match="convert them once"):
    ip.find_shards(src)
  with pytest.raises(ValueError, match="convert them once"):
    ip.find_shards(os.path.join(src, "*.tfrecord"))
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                              "the", "##s"]) + "\n")
  out = str(tmp_path / "converted")
  ip.main([f"--input_file={src}/*.tfrecord", f"--output_dir={out}",
           f"--vocab_file={vocab}"])
  manifest = manifest_lib.read(out)
  assert manifest["options"] == {"objective": "mlm_nsp",
                                 "max_seq_length": 16,
                                 "max_predictions_per_seq": 4,
                                 "masking": "static"}
  assert manifest["train"]["instances"] == 30
  assert {k: v for k, v in manifest["vocab"].items() if k != "file"} == {
      "size": 7, "pad_id": 0, "cls_id": 2, "sep_id": 3, "mask_id": 4}
  with pytest.raises(FileNotFoundError, match="no-vocab.txt"):
    ip.convert_tfrecords(f"{src}/*.tfrecord", out,
                         vocab_file=str(tmp_path / "no-vocab.txt"))
  ds = make(out, global_batch_size=10, shuffle=False, num_epochs=1)
  got = [ds[s] for s in range(3)]
  # Record for record: shard 0 holds records 0, 2, ...; shard 1 1, 3, ...
  order = list(range(0, 30, 2)) + list(range(1, 30, 2))
  for j, rid in enumerate(order):
    for k, v in written[rid].items():
      np.testing.assert_array_equal(got[j // 10][k][j % 10], v)


def test_missing_data_is_one_clear_error(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=missing):
    make(missing)
  with pytest.raises(FileNotFoundError, match="no train-"):
    make(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"nope-\*"):
    ip.find_shards(str(tmp_path / "nope-*.array_record"))
  with pytest.raises(FileNotFoundError, match="no TFRecord file matches"):
    ip.convert_tfrecords(str(tmp_path / "*.tfrecord"), str(tmp_path / "o"),
                         vocab_file="vocab.txt")


def test_shards_of_different_sequence_lengths_are_refused(tmp_path):
  write_shards(str(tmp_path / "a"), 8, num_shards=1, seq=16)
  write_shards(str(tmp_path / "b"), 8, num_shards=1, seq=32)
  paths = sorted(glob.glob(str(tmp_path / "*" / "*.array_record")))
  with pytest.raises(ValueError, match=r"b/train-00000-of-00001.*input_ids"
                     r"\[32\].*input_ids\[16\]"):
    make(paths)
  with pytest.raises(ValueError, match="max_seq_length=128"):
    make(paths[:1], max_seq_length=128)


def test_a_bad_record_in_a_shard_is_named(tmp_path):
  d = str(tmp_path)
  rng = np.random.default_rng(0)
  path = os.path.join(d, records.shard_filename("train", 0, 1,
                                                "array_record"))
  with records.RecordWriter(path) as w:
    for i in range(8):
      w.write(records.serialize_example(
          _example(rng, i, 16 if i != 5 else 12, 4)))
  ds = make(d, shuffle=False)
  with pytest.raises(ValueError, match=r"00001.array_record record 5: .*"
                     r"input_ids\[12\]"):
    ds[0]


def test_reads_data_made_by_create_pretraining_data(data_dir):
  manifest = manifest_lib.read(data_dir)
  paths = ip.find_shards(data_dir)
  assert [os.path.basename(p) for p in paths] == [
      s["file"] for s in manifest["train"]["shards"]]
  spec = ip.MaskingSpec.from_manifest(manifest)
  ds = make(paths, shuffle=False, num_epochs=1, global_batch_size=2,
            max_seq_length=manifest["options"]["max_seq_length"],
            dynamic_masking=spec)
  assert ds.num_records == manifest["train"]["instances"]
  written = [records.parse_example(r) for p in paths
             for r in records.read_records(p)]
  batch = ds[1]
  # Dynamic masks are checked above; here what the records hold as is.
  unmasked = (set(written[0]) if spec is None else
              {"input_mask", "segment_ids"})
  for k in unmasked:
    np.testing.assert_array_equal(batch[k], np.stack([written[2][k],
                                                      written[3][k]]))
