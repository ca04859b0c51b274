"""Packed fine-tuning batches: several examples a row, none seeing another."""

import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import pretrained
from bert_jax import tokenization
from tests import minilm


def test_pack_rows_places_every_example_without_overlap():
  rng = np.random.default_rng(0)
  for _ in range(50):
    cap = int(rng.integers(8, 64))
    lengths = rng.integers(0, cap + 1, int(rng.integers(1, 40)))
    row, offset, rows = finetune.pack_rows(lengths, cap)
    used = np.zeros((max(rows, 1), cap), int)
    for r, o, n in zip(row, offset, lengths):
      if n:
        assert 0 <= o and o + n <= cap
        used[r, o:o + n] += 1
    assert used.max() <= 1  # no token slot holds two examples
    assert used.sum() == lengths.sum()
    # Not more rows than one per example, not fewer than the tokens need.
    assert -(-lengths.sum() // cap) <= rows <= np.count_nonzero(lengths)
    # First-fit decreasing: no two rows whose contents would fit one row.
    fill = used.sum(1)
    if rows > 1:
      assert np.sort(fill)[0] + np.sort(fill)[1] > cap


def test_pack_rows_rejects_an_example_longer_than_a_row():
  with pytest.raises(ValueError, match="does not fit a packed row of 8"):
    finetune.pack_rows(np.array([3, 9]), 8)


def _features(n, max_len, width=96, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, max_len + 1, n)
  ids = rng.integers(5, 1000, (n, width)).astype(np.int32)
  mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
  segments = ((np.arange(width)[None] >= lengths[:, None] // 2)
              & (mask > 0)).astype(np.int32)
  return {"input_ids": ids * mask, "input_mask": mask,
          "segment_ids": segments, "labels": np.arange(n, dtype=np.int32)}


@pytest.mark.parametrize("train", [True, False])
def test_packed_batches_hold_each_example_whole_with_its_own_positions(train):
  feats = _features(45, 40)
  hosts = [finetune.FeatureBatches(
      feats, global_batch_size=16, seed=3, train=train, num_epochs=1.0,
      pack=True, row_multiple=2, process_index=p, process_count=2)
           for p in range(2)]
  seen = []
  for step in range(len(hosts[0])):
    batches = [h[step] for h in hosts]
    rows = {b["input_ids"].shape for b in batches}
    assert len(rows) == 1  # every host cuts the same global shape
    (shape,) = rows
    assert shape[0] % 2 == 0 and shape[1] == 64  # the longest (<= 40) rounded up to 32s
    for p, b in enumerate(batches):
      flat = {k: b[k].reshape(-1) for k in ("input_ids", "segment_ids",
                                             "position_ids", "pack_ids")}
      for j, e in enumerate(b["example_index"]):
        if e < 0:
          continue
        seen.append(int(e))
        assert b["labels"][j] == feats["labels"][e]
        n = int(feats["input_mask"][e].sum())
        # Positions are global over the hosts' rows; host p's come after p.
        start = b["cls_at"][j] - p * b["input_ids"].size
        assert b["last_at"][j] - b["cls_at"][j] == n - 1
        got = slice(start, start + n)
        np.testing.assert_array_equal(flat["input_ids"][got],
                                      feats["input_ids"][e, :n])
        np.testing.assert_array_equal(flat["segment_ids"][got],
                                      feats["segment_ids"][e, :n])
        np.testing.assert_array_equal(flat["position_ids"][got],
                                      np.arange(n))
        ids = flat["pack_ids"][got]
        assert ids[0] > 0 and (ids == ids[0]).all()
        # Nobody else in the row carries this example's pack id.
        row = start // shape[1]
        row_ids = b["pack_ids"][row]
        assert (row_ids == ids[0]).sum() == n
      assert ((b["pack_ids"] > 0) == (b["input_mask"] > 0)).all()
  if not train:
    assert sorted(seen) == list(range(45))  # every example exactly once


def test_packing_token_level_features_needs_unpack():
  feats = _features(8, 16)
  feats["label_ids"] = np.zeros((8, 96), np.int32)
  with pytest.raises(ValueError, match="need unpack=True"):
    finetune.FeatureBatches(feats, global_batch_size=4, seed=0, train=False,
                            pack=True, process_index=0, process_count=1)
  choices = _choice_features(8, 16)
  with pytest.raises(ValueError, match="one per choice"):
    finetune.FeatureBatches(choices, global_batch_size=4, seed=0,
                            train=False, pack=True, unpack=True,
                            process_index=0, process_count=1)


@pytest.mark.parametrize("train", [True, False])
def test_unpack_at_gathers_each_example_back_from_the_packed_rows(train):
  """Token-level packing: gathering the flattened rows of every host at
  `unpack_at` gives each example's own tokens, one example a row, and
  the per-token labels stay in that layout."""
  feats = _features(45, 40)
  feats["label_ids"] = (feats["input_ids"] % 7) * feats["input_mask"]
  hosts = [finetune.FeatureBatches(
      feats, global_batch_size=16, seed=3, train=train, num_epochs=1.0,
      pack=True, unpack=True, row_multiple=2, process_index=p,
      process_count=2) for p in range(2)]
  for step in range(len(hosts[0])):
    batches = [h[step] for h in hosts]
    everything = np.concatenate([b["input_ids"] for b in batches]).reshape(-1)
    for b in batches:
      cap = b["input_ids"].shape[1]
      assert b["unpack_at"].shape == b["example_mask"].shape == (8, cap)
      assert b["label_ids"].shape == (8, cap)
      for j, e in enumerate(b["example_index"]):
        if e < 0:
          assert not b["example_mask"][j].any()
          continue
        n = int(feats["input_mask"][e].sum())
        np.testing.assert_array_equal(b["example_mask"][j],
                                      np.arange(cap) < n)
        np.testing.assert_array_equal(
            everything[b["unpack_at"][j, :n]], feats["input_ids"][e, :n])
        np.testing.assert_array_equal(b["label_ids"][j],
                                      feats["label_ids"][e, :cap])
        assert b["unpack_at"][j, 0] == b["cls_at"][j]


def _choice_features(n, max_len, choices=4, width=64, seed=1):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, max_len + 1, (n, choices))
  mask = (np.arange(width)[None, None] < lengths[..., None]).astype(np.int32)
  ids = rng.integers(5, 1000, (n, choices, width)).astype(np.int32) * mask
  segments = ((np.arange(width)[None, None] >= 2) * mask).astype(np.int32)
  return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
          "labels": rng.integers(0, choices, n).astype(np.int32)}


def test_packed_choices_each_sequence_whole_and_pointed_at():
  feats = _choice_features(21, 30)
  ds = finetune.FeatureBatches(feats, global_batch_size=8, seed=0,
                               train=False, pack=True, process_index=0,
                               process_count=1)
  seen = []
  for batch in ds:
    flat = batch["input_ids"].reshape(-1)
    positions = batch["position_ids"].reshape(-1)
    assert batch["cls_at"].shape == batch["last_at"].shape == (8, 4)
    assert batch["input_ids"].shape[0] < 8 * 4  # choices do share rows
    for j, e in enumerate(batch["example_index"]):
      if e < 0:
        continue
      seen.append(int(e))
      for c in range(4):
        n = int(feats["input_mask"][e, c].sum())
        start = batch["cls_at"][j, c]
        assert batch["last_at"][j, c] == start + n - 1
        np.testing.assert_array_equal(flat[start:start + n],
                                      feats["input_ids"][e, c, :n])
        np.testing.assert_array_equal(positions[start:start + n],
                                      np.arange(n))
  assert sorted(seen) == list(range(21))


@pytest.fixture(scope="module")
def minilm_encoder():
  from flax import nnx
  from bert_jax import model as model_lib
  path = minilm.model_path()
  cfg, params, _ = pretrained.load_pretrained(path, task="encoder")
  cfg = cfg.replace(scan_layers=False)

  def build(attention="bidirectional"):
    c = cfg.replace(attention=attention)
    graphdef, state = nnx.split(model_lib.BertModel(c, rngs=nnx.Rngs(0)))
    nnx.replace_by_pure_dict(state, pretrained.jax_to_numpy(params))
    return nnx.merge(graphdef, state)

  tok = tokenization.create_tokenizer(pretrained.find_vocab(path), True)
  texts = [(s, None) for s in minilm.SENTENCES] + list(minilm.PAIRS)
  enc = tok.encode_pair_batch(texts, 48)
  feats = {k: enc[k] for k in ("input_ids", "input_mask", "segment_ids")}
  return build, feats


def test_packed_encoder_equals_transformers_on_each_example(minilm_encoder):
  """Real weights: each packed example's hidden states and pooled output
  equal transformers' BertModel run on that example alone."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  build, feats = minilm_encoder
  batch = finetune.FeatureBatches(feats, global_batch_size=8, seed=0,
                                  train=False, pack=True,
                                  process_index=0, process_count=1)[0]
  assert batch["input_ids"].shape[0] < len(minilm.SENTENCES) + len(
      minilm.PAIRS)  # some examples do share a row
  out = build()(batch["input_ids"], batch["segment_ids"],
                batch["input_mask"], position_ids_BxL=batch["position_ids"],
                pack_ids_BxL=batch["pack_ids"], pool_at_N=batch["cls_at"])
  seq = np.asarray(out.sequence_output).reshape(-1, out.sequence_output.shape[-1])
  hf = transformers.BertModel.from_pretrained(minilm.model_path()).eval()
  for j, e in enumerate(batch["example_index"]):
    if e < 0:
      continue
    n = int(feats["input_mask"][e].sum())
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(feats["input_ids"][e:e + 1, :n]),
               token_type_ids=torch.tensor(feats["segment_ids"][e:e + 1, :n]))
    start = batch["cls_at"][j]
    np.testing.assert_allclose(seq[start:start + n],
                               ref.last_hidden_state[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(np.asarray(out.pooled_output[j]),
                               ref.pooler_output[0].numpy(), atol=2e-5)


def test_packed_causal_encoder_equals_unpacked(minilm_encoder):
  """Causal: packed rows keep the causal mask within each example, and
  `last_at` pools the last token as the unpacked model does."""
  build, feats = minilm_encoder
  model = build("causal")
  common = dict(global_batch_size=8, seed=0, train=False, process_index=0,
                process_count=1)
  plain = finetune.FeatureBatches(feats, **common)[0]
  packed = finetune.FeatureBatches(feats, pack=True, **common)[0]
  a = model(plain["input_ids"], plain["segment_ids"], plain["input_mask"])
  b = model(packed["input_ids"], packed["segment_ids"], packed["input_mask"],
            position_ids_BxL=packed["position_ids"],
            pack_ids_BxL=packed["pack_ids"], pool_at_N=packed["last_at"])
  np.testing.assert_array_equal(plain["example_index"],
                                packed["example_index"])
  keep = plain["example_index"] >= 0
  np.testing.assert_allclose(np.asarray(b.pooled_output)[keep],
                             np.asarray(a.pooled_output)[keep], atol=2e-5)


def _heads_pair(minilm_encoder, head_cls, *args):
  """A head on MiniLM's encoder (its own layer freshly initialised)."""
  from flax import nnx
  build, _ = minilm_encoder
  head = head_cls(build().config, *args, rngs=nnx.Rngs(0))
  head.bert = build()
  return head


def test_packed_span_and_tag_heads_equal_unpacked(minilm_encoder):
  """Real weights: SQuAD's start/end logits and NER's tag logits of every
  example's tokens are the same packed (gathered back) as unpacked."""
  from bert_jax import heads
  _, feats = minilm_encoder
  common = dict(global_batch_size=16, seed=0, train=False, process_index=0,
                process_count=1)
  plain = finetune.FeatureBatches(feats, **common)[0]
  packed = finetune.FeatureBatches(feats, pack=True, unpack=True,
                                   **common)[0]
  assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]
  np.testing.assert_array_equal(plain["example_index"],
                                packed["example_index"])
  args = {k: packed[k] for k in ("position_ids", "pack_ids", "unpack_at",
                                 "example_mask")}
  mask = plain["input_mask"] > 0
  length = mask.shape[1]
  qa = _heads_pair(minilm_encoder, heads.BertForQuestionAnswering)
  a = qa(plain["input_ids"], plain["segment_ids"], plain["input_mask"])
  b = qa(packed["input_ids"], packed["segment_ids"], packed["input_mask"],
         packed=args)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.where(mask, x, 0),
                               np.where(mask, y[:, :length], 0), atol=2e-5)
  tags = _heads_pair(minilm_encoder, heads.BertForTokenClassification, 9)
  a = tags(plain["input_ids"], plain["segment_ids"], plain["input_mask"])
  b = tags(packed["input_ids"], packed["segment_ids"], packed["input_mask"],
           packed=args)
  np.testing.assert_allclose(np.where(mask[..., None], a, 0),
                             np.where(mask[..., None], b[:, :length], 0),
                             atol=2e-5)


def test_packed_multiple_choice_equals_unpacked(minilm_encoder):
  from bert_jax import heads
  _, feats = minilm_encoder
  n = len(feats["input_ids"]) // 4 * 4
  choices = {k: v[:n].reshape(n // 4, 4, -1) for k, v in feats.items()}
  common = dict(global_batch_size=4, seed=0, train=False, process_index=0,
                process_count=1)
  plain = finetune.FeatureBatches(choices, **common)[0]
  packed = finetune.FeatureBatches(choices, pack=True, **common)[0]
  mc = _heads_pair(minilm_encoder, heads.BertForMultipleChoice)
  a = mc(plain["input_ids"], plain["segment_ids"], plain["input_mask"])
  b = mc(packed["input_ids"], packed["segment_ids"], packed["input_mask"],
         packed={"position_ids": packed["position_ids"],
                 "pack_ids": packed["pack_ids"],
                 "pool_at": packed["cls_at"]})
  keep = plain["example_index"] >= 0
  assert packed["input_ids"].shape[0] < 4 * keep.sum()
  np.testing.assert_allclose(np.asarray(b)[keep], np.asarray(a)[keep],
                             atol=2e-5)
