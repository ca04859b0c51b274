"""Model invariants and formulas (parity with transformers: test_pretrained)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import heads
from bert_jax import model as model_lib

BertConfig = model_lib.BertConfig


def _num_params(module_fn):
  state = nnx.state(nnx.eval_shape(module_fn), nnx.Param)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def _formula_params(cfg: BertConfig, vocab: int | None = None) -> int:
  """Parameter count of BertModel from its definition, written out by hand."""
  h, f, v = cfg.hidden_size, cfg.intermediate_size, vocab or cfg.vocab_size
  embeddings = (v + cfg.max_position_embeddings + cfg.type_vocab_size) * h
  embeddings += 2 * h  # LayerNorm
  attention = 4 * (h * h + h) + 2 * h
  ffn = h * f + f + f * h + h + 2 * h
  pooler = h * h + h
  return embeddings + cfg.num_layers * (attention + ffn) + pooler


@pytest.mark.parametrize("preset", ["tiny", "base", "large", "L6_H768_A3"])
def test_parameter_count_matches_formula(preset):
  cfg = BertConfig.from_preset(preset)
  # The table holds the vocabulary padded to a multiple of 128 rows.
  assert cfg.padded_vocab_size == 30592 == 239 * 128
  assert _num_params(lambda: model_lib.BertModel(
      cfg, rngs=nnx.Rngs(0))) == _formula_params(cfg, 30592)
  assert _num_params(lambda: model_lib.BertModel(
      cfg.replace(vocab_pad_multiple=1), rngs=nnx.Rngs(0))
                     ) == _formula_params(cfg)


def test_paper_sizes():
  # The paper's Table: BERT-Base 110M, BERT-Large 340M parameters.
  base = _formula_params(BertConfig.from_preset("base"))
  large = _formula_params(BertConfig.from_preset("large"))
  assert round(base / 1e6) == 109  # 109,482,240: "110M" in the paper
  assert 330e6 < large < 340e6  # 335,141,888: "340M" in the paper


def test_presets_table6():
  for name, (l, h, a) in {"L3_H768_A12": (3, 768, 12),
                          "L6_H768_A3": (6, 768, 3),
                          "L24_H1024_A16": (24, 1024, 16)}.items():
    cfg = BertConfig.from_preset(name)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (l, h, a)
    assert cfg.intermediate_size == 4 * h


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=100, num_heads=3), "num_heads=3 does not divide"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(attention="sideways"), "attention"),
    (dict(num_layers=0), "num_layers must be a positive int"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
    (dict(dtype="int8"), "dtype"),
])
def test_invalid_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    BertConfig(**kwargs)
  with pytest.raises(ValueError, match="unknown BERT preset 'huge'"):
    BertConfig.from_preset("huge")


def _tiny(**kw):
  base = dict(vocab_size=97, hidden_size=32, num_layers=3, num_heads=4,
              intermediate_size=64, max_position_embeddings=32)
  return BertConfig(**{**base, **kw})


def _inputs(seed=0, batch=3, length=12, vocab=97):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  seg = (np.arange(length)[None] >= 5).astype(np.int32) * mask
  return jnp.asarray(ids * mask), jnp.asarray(seg), jnp.asarray(mask)


def test_init_distribution_is_tf1_truncated_normal():
  cfg = BertConfig.from_preset("tiny")
  m = model_lib.BertModel(cfg, rngs=nnx.Rngs(0))
  w = np.asarray(m.embeddings.word_embeddings.embedding[...]).ravel()
  # TF1: N(0, 0.02) truncated at two standard deviations (0.04).
  assert np.abs(w).max() <= 0.04 + 1e-7
  # Std of a normal truncated at +-2 sigma is 0.8796 sigma.
  np.testing.assert_allclose(w.std(), 0.02 * 0.87962566, rtol=0.01)
  np.testing.assert_array_equal(m.pooler.bias[...], 0)


def test_padding_does_not_change_real_positions():
  cfg = _tiny()
  m = model_lib.BertModel(cfg, rngs=nnx.Rngs(0))
  ids, seg, mask = _inputs()
  out = m(ids, seg, mask)
  noisy = jnp.where(mask == 0, 55, ids)  # garbage in the padding
  out2 = m(noisy, seg, mask)
  keep = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(out.sequence_output)[keep],
                             np.asarray(out2.sequence_output)[keep],
                             atol=1e-6)
  np.testing.assert_allclose(out.pooled_output, out2.pooled_output, atol=1e-6)


def test_causal_attention_ignores_the_future():
  cfg = _tiny(attention="causal")
  m = model_lib.BertModel(cfg, rngs=nnx.Rngs(0))
  ids, seg, mask = _inputs()
  out = m(ids, seg)
  changed = ids.at[:, 6:].set(11)
  out2 = m(changed, seg)
  np.testing.assert_allclose(out.sequence_output[:, :6],
                             out2.sequence_output[:, :6], atol=1e-6)
  assert not np.allclose(out.sequence_output[:, 6:],
                         out2.sequence_output[:, 6:], atol=1e-3)


@pytest.mark.slow
def test_scan_unrolled_and_remat_agree_on_outputs_and_grads():
  ids, seg, mask = _inputs()
  cfg = _tiny()
  graphdef, state = nnx.split(model_lib.BertModel(cfg, rngs=nnx.Rngs(0)))

  def loss(cfg_variant, s):
    gd = nnx.split(model_lib.BertModel(cfg_variant, rngs=nnx.Rngs(1)))[0]
    out = nnx.merge(gd, s)(ids, seg, mask, rng=jax.random.key(3))
    return jnp.sum(out.sequence_output ** 2) + jnp.sum(out.pooled_output)

  ref_val, ref_grad = jax.jit(jax.value_and_grad(
      lambda s: loss(cfg, s)))(state)
  for variant in (cfg.replace(scan_layers=False),
                  cfg.replace(remat_policy="full"),
                  cfg.replace(scan_layers=False, remat_policy="dots")):
    val, grad = jax.jit(jax.value_and_grad(
        lambda s, v=variant: loss(v, s)))(state)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
      # Float32 summation-order noise, relative to each tensor's scale.
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-4 * float(np.abs(b).max()) + 1e-7)


def test_hidden_states_are_embeddings_then_each_layer():
  cfg = _tiny()
  m = model_lib.BertModel(cfg, rngs=nnx.Rngs(0))
  ids, seg, mask = _inputs()
  out = m(ids, seg, mask, output_hidden_states=True)
  assert out.hidden_states.shape == (cfg.num_layers + 1, 3, 12, 32)
  np.testing.assert_array_equal(out.hidden_states[-1], out.sequence_output)
  np.testing.assert_allclose(
      out.hidden_states[0], m.embeddings(ids, seg), atol=1e-6)


def test_attention_dropout_path_matches_fused_attention_without_dropout():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 3, 4)), jnp.float32)
             for _ in range(3))
  mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], bool)[:, None, None, :]
  for causal in (False, True):
    ref = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    # rate -> 0 with a key: the manual path, identity dropout.
    got = model_lib._attention_with_dropout(
        q, k, v, mask, causal, 1e-12, jax.random.key(0))
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_dropout_is_deterministic_per_key_and_scales():
  x = jnp.ones((1000,))
  a = model_lib.dropout(x, 0.1, jax.random.key(0))
  b = model_lib.dropout(x, 0.1, jax.random.key(0))
  np.testing.assert_array_equal(a, b)
  kept = np.asarray(a) > 0
  np.testing.assert_allclose(np.asarray(a)[kept], 1 / 0.9, rtol=1e-6)
  assert 0.85 < kept.mean() < 0.95
  np.testing.assert_array_equal(model_lib.dropout(x, 0.1, None), x)


def test_bf16_compute_keeps_float32_params_and_logits():
  cfg = _tiny(dtype="bfloat16")
  m = heads.BertForPreTraining(cfg, rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  # Larger embeddings give logits of a realistic size (|z| ~ 10), where
  # bf16's rounding (2^-9 of |z|) is visible.
  table = m.bert.embeddings.word_embeddings.embedding
  table[...] = table[...] * 50.0
  ids, seg, mask = _inputs()
  pos = jnp.asarray([[1, 2], [3, 4], [1, 2]], jnp.int32)
  out = m(ids, seg, mask, pos)
  assert out.mlm_logits.dtype == jnp.float32
  assert out.nsp_logits.dtype == jnp.float32
  # The decoder is float32: given the head's own (bf16) transform output h,
  # the logits are h @ E^T + b to float32 rounding. Bf16 logits, as from
  # `embedding.attend(h)` in the compute dtype, miss this bound by far.
  seq = heads.gather_positions(m.bert(ids, seg, mask).sequence_output, pos)
  h = m.mlm.layer_norm(model_lib.activation(cfg.hidden_act)(
      m.mlm.transform(seq)))
  assert h.dtype == jnp.bfloat16
  bias = np.asarray(m.mlm.output_bias[...], np.float64)
  ref = np.asarray(h, np.float64) @ np.asarray(table[...], np.float64).T + bias
  scale = np.abs(ref).max()
  assert scale > 5.0
  bound = 1e-5 * scale
  v = cfg.vocab_size  # the rest is padding, masked (test_heads)
  assert np.abs(np.asarray(out.mlm_logits)[..., :v] - ref[..., :v]
                ).max() <= bound
  bf16_logits = np.asarray(
      m.bert.embeddings.word_embeddings.attend(h).astype(jnp.float32)) + bias
  assert np.abs(bf16_logits - ref).max() > 10 * bound
  # End to end, the bf16 encoder differs from a float32 run of the same
  # params by its own rounding: 0.7% of the logits' size here (the old
  # bound, 0.1, was a third of the unscaled model's logits).
  f32 = nnx.merge(nnx.split(heads.BertForPreTraining(
      cfg.replace(dtype="float32"), rngs=nnx.Rngs(1)))[0],
                  nnx.state(m))(ids, seg, mask, pos)
  np.testing.assert_allclose(out.mlm_logits, f32.mlm_logits,
                             atol=0.02 * scale)


def test_json_dict_round_trip_keeps_causal_attention():
  for attention in ("bidirectional", "causal"):
    cfg = _tiny(attention=attention, hidden_act="gelu_tanh")
    d = cfg.to_json_dict()
    # Hugging Face's flag: transformers builds a causal BERT from it.
    assert d["is_decoder"] is (attention == "causal")
    assert BertConfig.from_json_dict(d) == cfg
  assert BertConfig.from_json_dict(
      {k: v for k, v in d.items() if k != "is_decoder"}
  ).attention == "bidirectional"
