"""The vocabulary padded for sharding (issue #10): same numbers, true files.

The model holds `padded_vocab_size` rows (a multiple of 128) so that the
tensor axis of every mesh the planner offers divides the 'vocab' axis. The
reference throughout is the same model without padding
(`vocab_pad_multiple=1`) on one device.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax import pretrained
from bert_jax import sharding
from tests import test_sharding


def _cfg(vocab_size, **kw):
  return model_lib.BertConfig.from_preset(
      "tiny", vocab_size=vocab_size, hidden_size=64, num_heads=8,
      intermediate_size=128, hidden_dropout_prob=0.0,
      attention_dropout_prob=0.0, **kw)


def _params(module):
  return pretrained.jax_to_numpy(nnx.to_pure_dict(nnx.state(module,
                                                            nnx.Param)))


def _padded_twin(cfg, params, rng):
  """The padded model with the unpadded one's weights; the padding rows
  hold large values, which only the mask keeps out of the numbers."""
  padded = pretrained.pad_vocab(cfg, params)
  emb = padded["bert"]["embeddings"]["word_embeddings"]["embedding"]
  emb[cfg.vocab_size:] = rng.normal(0, 5, emb[cfg.vocab_size:].shape)
  padded["mlm"]["output_bias"][cfg.vocab_size:] = 50.0
  return padded


def _with_params(make, params):
  module = make()
  nnx.update(module, nnx.State(jax.tree.map(jnp.asarray, params)))
  return module


def test_padded_model_computes_the_unpadded_models_numbers():
  cfg = _cfg(1000)
  assert cfg.padded_vocab_size == 1024
  ref_cfg = cfg.replace(vocab_pad_multiple=1)
  rng = np.random.default_rng(0)
  ref = heads.BertForPreTraining(ref_cfg, rngs=nnx.Rngs(0))
  # The same seed draws the same weights, padded with zero rows.
  fresh = pretrained._flatten(_params(heads.BertForPreTraining(
      cfg, rngs=nnx.Rngs(0))))
  want = pretrained._flatten(pretrained.pad_vocab(cfg, _params(ref)))
  assert fresh.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(fresh[k], want[k], err_msg=k)
  padded_params = _padded_twin(cfg, _params(ref), rng)
  padded = _with_params(
      lambda: heads.BertForPreTraining(cfg, rngs=nnx.Rngs(1)), padded_params)
  batch = test_sharding._batch(cfg)
  # Labels everywhere in the vocabulary, the last real id included.
  batch["masked_lm_ids"][0, 0] = cfg.vocab_size - 1

  def run(model):
    graphdef, state = nnx.split(model)

    def loss(s):
      out = nnx.merge(graphdef, s)(
          batch["input_ids"], batch["segment_ids"], batch["input_mask"],
          batch["masked_lm_positions"])
      value, sums = heads.pretraining_loss(out, batch)
      return value, (sums, out)
    (value, (sums, out)), g = jax.jit(jax.value_and_grad(
        loss, has_aux=True))(state)
    return value, sums, out, _flat(g)

  ref_loss, ref_sums, ref_out, g_ref = run(ref)
  got_loss, got_sums, got_out, g = run(padded)
  np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
  for k in ref_sums:
    np.testing.assert_allclose(got_sums[k], ref_sums[k], rtol=1e-6,
                               err_msg=k)
  v = cfg.vocab_size
  assert got_out.mlm_logits.shape[-1] == 1024
  np.testing.assert_allclose(got_out.mlm_logits[..., :v], ref_out.mlm_logits,
                             rtol=1e-6, atol=1e-6)
  assert (np.argmax(got_out.mlm_logits, -1)
          == np.argmax(ref_out.mlm_logits, -1)).all()
  assert float(jax.nn.softmax(got_out.mlm_logits)[..., v:].max()) == 0.0
  # The padding rows get no gradient; the real ones the unpadded model's.
  emb = "bert/embeddings/word_embeddings/embedding"
  for k in (emb, "mlm/output_bias"):
    assert not np.asarray(g[k][v:]).any(), k
    np.testing.assert_allclose(g[k][:v], g_ref[k], rtol=1e-4, atol=1e-7)


def _flat(state):
  return {"/".join(str(p) for p in k): np.asarray(x[...])
          for k, x in nnx.to_flat_state(state)}


def test_ltr_loss_equals_the_unpadded_models():
  cfg = _cfg(1000, attention="causal")
  ref = heads.BertForLTR(cfg.replace(vocab_pad_multiple=1), rngs=nnx.Rngs(0))
  padded = _with_params(lambda: heads.BertForLTR(cfg, rngs=nnx.Rngs(1)),
                        _padded_twin(cfg, _params(ref),
                                     np.random.default_rng(1)))
  batch = test_sharding._batch(cfg)
  outs = [heads.ltr_loss(m(batch["input_ids"], batch["segment_ids"],
                           batch["input_mask"]), batch) for m in (ref, padded)]
  np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-6)
  assert outs[1][1]["lm_correct"] == outs[0][1]["lm_correct"]


@pytest.mark.parametrize("mesh_shape", [(1, 2, 4), (1, 1, 8)])
def test_bert_vocabulary_shards_over_4_and_8(mesh_shape):
  """30,522 rows do not split over 4 or 8 devices; 30,592 do."""
  assert jax.device_count() == 8
  cfg = _cfg(30522)
  ref = heads.BertForPreTraining(cfg.replace(vocab_pad_multiple=1),
                                 rngs=nnx.Rngs(0))
  params = _padded_twin(cfg, _params(ref), np.random.default_rng(2))
  batch = test_sharding._batch(cfg)
  graphdef, state = nnx.split(ref)
  ref_loss, ref_out = test_sharding._loss(graphdef, state, batch)

  mesh = sharding.create_mesh(mesh_shape)
  rules = sharding.DEFAULT_RULES
  make = lambda: heads.BertForPreTraining(cfg, rngs=nnx.Rngs(0))
  graphdef, _, shardings = sharding.create_sharded_state(make, mesh, rules)
  sharded = jax.device_put(nnx.split(_with_params(make, params))[1],
                           shardings)
  emb = sharded["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert emb[...].sharding.spec[0] == "tensor"
  assert emb[...].addressable_shards[0].data.shape[0] == 30592 // mesh_shape[2]
  data = jax.device_put(batch, sharding.batch_sharding(mesh))

  @functools.partial(jax.jit, in_shardings=(shardings, None))
  def step(s, b):
    (loss, out), grads = jax.value_and_grad(
        lambda s: test_sharding._loss(graphdef, s, b), has_aux=True)(s)
    return loss, out.mlm_logits, grads

  with sharding.activation_rules(mesh, rules):
    loss, logits, grads = step(sharded, data)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(logits[..., :30522], ref_out.mlm_logits,
                             rtol=1e-5, atol=1e-5)
  g = grads["bert"]["embeddings"]["word_embeddings"]["embedding"][...]
  assert not np.asarray(g[30522:]).any()


def test_files_hold_the_true_vocabulary(tmp_path):
  cfg = _cfg(1000)
  params = pretrained.init_params(cfg)
  assert params["mlm"]["output_bias"].shape == (1024,)
  native = pretrained.save_bert_jax(cfg, params, None,
                                    str(tmp_path / "native"))
  hf = pretrained.export_hf(cfg, params, None, str(tmp_path / "hf"))
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(os.path.join(hf, "model.safetensors"))
  assert tensors["bert.embeddings.word_embeddings.weight"].shape == (1000, 64)
  assert tensors["cls.predictions.bias"].shape == (1000,)
  assert tensors["cls.predictions.decoder.weight"].shape == (1000, 64)
  with open(os.path.join(hf, "config.json")) as f:
    assert json.load(f)["vocab_size"] == 1000
  tf1 = pretrained.export_tf1_names(cfg, params)
  assert tf1["bert/embeddings/word_embeddings"].shape == (1000, 64)
  assert tf1["cls/predictions/output_bias"].shape == (1000,)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  stored = ocp.StandardCheckpointer().metadata(os.path.join(native, "params"))
  stored = getattr(stored, "item_metadata", stored)
  assert tuple(stored["mlm"]["output_bias"].shape) == (1000,)
  # Imports pad again, with the true rows bit for bit.
  for cfg2, back, _ in (pretrained.load_bert_jax(native),
                        pretrained.import_hf(hf)):
    assert cfg2.vocab_size == 1000
    for k in ("mlm/output_bias", "bert/embeddings/word_embeddings/embedding"):
      got, want = (pretrained._flatten(p)[k] for p in (back, params))
      assert got.shape[0] == 1024
      np.testing.assert_array_equal(got[:1000], want[:1000])
      assert not got[1000:].any()
