"""Sharded execution equals single-device execution (8 forced CPU devices)."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax import sharding


def _batch(cfg, batch_size=8, seq_len=16, num_pred=4, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(seq_len // 2, seq_len + 1, size=batch_size)
  mask = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
  return {
      "input_ids": rng.integers(5, cfg.vocab_size, (batch_size, seq_len),
                                dtype=np.int32) * mask,
      "segment_ids": (np.arange(seq_len)[None] >= lengths[:, None] // 2)
                     .astype(np.int32) * mask,
      "input_mask": mask,
      "masked_lm_positions": np.sort(rng.integers(
          1, seq_len // 2, (batch_size, num_pred), dtype=np.int32), axis=1),
      "masked_lm_ids": rng.integers(5, cfg.vocab_size, (batch_size, num_pred),
                                    dtype=np.int32),
      "masked_lm_weights": (rng.random((batch_size, num_pred)) > 0.2)
                           .astype(np.float32),
      "next_sentence_labels": rng.integers(0, 2, (batch_size, 1),
                                           dtype=np.int32),
  }


def _loss(graphdef, state, batch):
  module = nnx.merge(graphdef, state)
  out = module(batch["input_ids"], batch["segment_ids"], batch["input_mask"],
               batch["masked_lm_positions"])
  return heads.pretraining_loss(out, batch)[0], out


@pytest.mark.parametrize("scan_layers", [True, False])
def test_sharded_forward_and_grad_equal_single_device(scan_layers):
  assert jax.device_count() == 8
  cfg = model_lib.BertConfig.from_preset(
      "tiny", vocab_size=96, num_heads=4, scan_layers=scan_layers,
      hidden_dropout_prob=0.0, attention_dropout_prob=0.0)
  make = lambda: heads.BertForPreTraining(cfg, rngs=nnx.Rngs(0))
  batch = _batch(cfg)

  # Reference: one device, no sharding at all.
  graphdef, state = nnx.split(make())
  (ref_loss, ref_out), ref_grads = jax.jit(jax.value_and_grad(
      lambda s: _loss(graphdef, s, batch), has_aux=True))(state)

  mesh = sharding.create_mesh((2, 2, 2))
  rules = sharding.DEFAULT_RULES
  graphdef, sharded_state, shardings = sharding.create_sharded_state(
      make, mesh, rules)
  # Parameters really are split: the word embedding over vocab x embed.
  emb = sharded_state["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert emb[...].sharding.spec == jax.sharding.PartitionSpec(
      "tensor", "fsdp")
  assert len(emb[...].addressable_shards) == 8
  # 96 rows padded to 128: 64 a tensor shard.
  assert emb[...].addressable_shards[0].data.shape == (64, 64)

  data = jax.device_put(batch, sharding.batch_sharding(mesh))

  @functools.partial(jax.jit, in_shardings=(shardings, None),
                     out_shardings=(None, None, shardings))
  def step(s, b):
    (loss, out), grads = jax.value_and_grad(
        lambda s: _loss(graphdef, s, b), has_aux=True)(s)
    return loss, out, grads

  with sharding.activation_rules(mesh, rules):
    loss, out, grads = step(sharded_state, data)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.mlm_logits, ref_out.mlm_logits,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.nsp_logits, ref_out.nsp_logits,
                             rtol=1e-5, atol=1e-5)
  flat_ref = dict(nnx.to_flat_state(ref_grads))
  flat = dict(nnx.to_flat_state(grads))
  assert flat.keys() == flat_ref.keys()
  for key in flat_ref:
    np.testing.assert_allclose(flat[key][...], flat_ref[key][...],
                               rtol=1e-4, atol=1e-6, err_msg=str(key))


def test_mesh_shapes_and_errors():
  mesh = sharding.create_mesh((-1, 2, 1))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert sharding.data_parallel_size(mesh) == 8
  with pytest.raises(ValueError, match="devices are not divisible by 3"):
    sharding.create_mesh((-1, 3, 1))
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.create_mesh((-1, -1, 1))
  with pytest.raises(ValueError, match="has 4 devices, but 8"):
    sharding.create_mesh((2, 2, 1))
