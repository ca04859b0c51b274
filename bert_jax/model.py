"""The BERT encoder (Devlin et al., 2018) in Flax NNX.

Faithful to the original TF1 `modeling.py`: summed token + position + segment
embeddings, LayerNorm, dropout; post-LN Transformer layers; an additive mask
on padded keys (optionally causal, for the paper's left-to-right ablation);
a tanh pooler on [CLS].

Used functionally (see STYLE.md): build a module, `nnx.split` it into
`(graphdef, state)`, and call `nnx.merge(graphdef, state)(...)` inside a pure,
jitted function. Randomness is explicit: `__call__` takes a dropout key (None
means deterministic), no `nnx.Rngs` is kept in the module.

Layers are always stored stacked, with a leading 'layers' axis on every
per-layer parameter, whether they run under `jax.lax.scan` or as an unrolled
Python loop (`BertConfig.scan_layers`). Checkpoints therefore have one layout.

Every parameter carries logical axis names ('vocab', 'embed', 'mlp', 'heads',
'kv', 'layers'); `bert_jax.sharding` maps them to mesh axes. Activations are
constrained at block boundaries with logical names ('activation_batch', ...),
which are no-ops when no rules are in context.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

# The embedding table and the MLM output bias get this many rows at least,
# rounded up to a multiple of it (30,522 -> 30,592): every mesh the planner
# offers (tensor axis 1, 2, 4 or 8) divides the sharded 'vocab' axis, and the
# MXU tiles whole. The padded rows are never looked up, their logits are
# masked out (heads.MaskedLMHead), and checkpoint files hold only the true
# vocabulary (bert_jax.pretrained pads on import, strips on export).
VOCAB_PAD_MULTIPLE = 128

_ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
_ATTENTION = ("bidirectional", "causal")
_REMAT = ("none", "full", "dots", "dots_no_batch")
_DTYPES = ("float32", "bfloat16", "float16")

@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture and numerics of a BERT encoder. Built from the job config.

  `hidden_act`: 'gelu' is the exact erf form (Hugging Face checkpoints),
  'gelu_tanh' the tanh approximation (Google's TF1 checkpoints).
  `attention_impl`: None lets JAX pick (a fused cuDNN kernel on GPUs when it
  applies), or 'xla' / 'cudnn'. Attention dropout needs the probabilities,
  so while it is active (training with attention_dropout_prob > 0) the
  unfused path is used.
  `vocab_size` is the true vocabulary; the parameters hold
  `padded_vocab_size` rows (`vocab_pad_multiple`; 1: no padding).
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "bidirectional"
  remat_policy: str = "none"
  scan_layers: bool = True
  attention_impl: str | None = None
  vocab_pad_multiple: int = VOCAB_PAD_MULTIPLE

  def __post_init__(self):
    def check(ok: bool, msg: str):
      if not ok:
        raise ValueError(f"BertConfig: {msg}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings",
                 "type_vocab_size", "vocab_pad_multiple"):
      value = getattr(self, name)
      check(isinstance(value, int) and value > 0,
            f"{name} must be a positive int, got {value!r}")
    check(self.hidden_size % self.num_heads == 0,
          f"num_heads={self.num_heads} does not divide "
          f"hidden_size={self.hidden_size}")
    check(self.hidden_act in _ACTIVATIONS,
          f"hidden_act={self.hidden_act!r} not in {_ACTIVATIONS}")
    check(self.attention in _ATTENTION,
          f"attention={self.attention!r} not in {_ATTENTION}")
    check(self.remat_policy in _REMAT,
          f"remat_policy={self.remat_policy!r} not in {_REMAT}")
    check(self.dtype in _DTYPES, f"dtype={self.dtype!r} not in {_DTYPES}")
    check(self.param_dtype in _DTYPES,
          f"param_dtype={self.param_dtype!r} not in {_DTYPES}")
    check(self.attention_impl in (None, "xla", "cudnn"),
          f"attention_impl={self.attention_impl!r} not in (None, xla, cudnn)")
    for name in ("hidden_dropout_prob", "attention_dropout_prob"):
      value = getattr(self, name)
      check(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")
    check(self.layer_norm_eps > 0, "layer_norm_eps must be > 0")
    check(self.initializer_range > 0, "initializer_range must be > 0")

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding table and the MLM output bias."""
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes: Any) -> "BertConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_preset(cls, name: str, **overrides: Any) -> "BertConfig":
    """A named preset, or any `L<layers>_H<hidden>_A<heads>` size."""
    size = PRESETS.get(name)
    m = re.fullmatch(r"L([1-9]\d*)_H([1-9]\d*)_A([1-9]\d*)", name)
    if size is None and m:
      size = _size(*map(int, m.groups()))
    if size is None:
      raise ValueError(f"unknown BERT preset {name!r}; known: "
                       f"{', '.join(sorted(PRESETS))}, or "
                       "L<layers>_H<hidden>_A<heads>")
    return cls(**{**size, **overrides})

  # The `bert_config.json` of Google's releases and Hugging Face's config.json
  # share these keys; `is_decoder` is Hugging Face's flag for causal attention
  # (Google's TF1 BERT has none: `pretrained.export_tf1` refuses LTR models).
  def to_json_dict(self) -> dict[str, Any]:
    return {
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size,
        "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_new",
                       "relu": "relu"}[self.hidden_act],
        "hidden_dropout_prob": self.hidden_dropout_prob,
        "attention_probs_dropout_prob": self.attention_dropout_prob,
        "max_position_embeddings": self.max_position_embeddings,
        "type_vocab_size": self.type_vocab_size,
        "initializer_range": self.initializer_range,
        "layer_norm_eps": self.layer_norm_eps,
        "is_decoder": self.attention == "causal",
    }

  @classmethod
  def from_json_dict(cls, d: dict[str, Any], *, tf1_gelu: bool = False,
                     **overrides: Any) -> "BertConfig":
    """Reads a `bert_config.json` / HF `config.json` dict.

    With `tf1_gelu`, 'gelu' means the tanh approximation, as in the TF1 code
    that Google's `bert_config.json` files were written for. `is_decoder:
    true` (a Hugging Face causal LM, e.g. an exported LTR model) gives
    attention='causal'.
    """
    act = d.get("hidden_act", "gelu")
    act_map = {"gelu": "gelu_tanh" if tf1_gelu else "gelu",
               "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "relu": "relu"}
    if act not in act_map:
      raise ValueError(f"hidden_act={act!r} in the checkpoint config is not "
                       f"supported; supported: {sorted(act_map)}")
    kwargs = dict(
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        intermediate_size=d["intermediate_size"],
        hidden_act=act_map[act],
        hidden_dropout_prob=d.get("hidden_dropout_prob", 0.1),
        attention_dropout_prob=d.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=d.get("max_position_embeddings", 512),
        type_vocab_size=d.get("type_vocab_size", 2),
        initializer_range=d.get("initializer_range", 0.02),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        attention="causal" if d.get("is_decoder", False) else "bidirectional",
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def job_overrides(m: Any) -> dict[str, Any]:
  """The BertConfig fields a job's `config.model` sets on a preset or a
  checkpoint: dropout, dtype, remat, layer scan, attention kernel, and the
  activation when given ('' keeps the preset's or checkpoint's)."""
  out = dict(hidden_dropout_prob=m.hidden_dropout_prob,
             attention_dropout_prob=m.attention_dropout_prob, dtype=m.dtype,
             remat_policy=m.remat_policy, scan_layers=m.scan_layers,
             attention_impl=m.attention_impl or None)
  if m.hidden_act:
    out["hidden_act"] = m.hidden_act
  return out


def _size(layers: int, hidden: int, heads: int) -> dict[str, int]:
  return dict(num_layers=layers, hidden_size=hidden, num_heads=heads,
              intermediate_size=4 * hidden)


PRESETS: dict[str, dict[str, Any]] = {
    # Tiny enough for unit tests on CPU; the vocab stays BERT's.
    "tiny": _size(2, 128, 2),
    # Turc et al. (2019) compact BERTs, released by Google with the original.
    "mini": _size(4, 256, 4),
    "small": _size(4, 512, 8),
    "medium": _size(8, 512, 8),
    "base": _size(12, 768, 12),
    "large": _size(24, 1024, 16),
    # The six model sizes of the paper's Table 6.
    "L3_H768_A12": _size(3, 768, 12),
    "L6_H768_A3": _size(6, 768, 3),
    "L6_H768_A12": _size(6, 768, 12),
    "L12_H768_A12": _size(12, 768, 12),
    "L12_H1024_A16": _size(12, 1024, 16),
    "L24_H1024_A16": _size(24, 1024, 16),
}


def _partitioned(init, names: tuple[str | None, ...]):
  # Logical names only: placement happens when the state is created under
  # jit with out_shardings (bert_jax.sharding), so no mesh is needed here.
  return nnx.with_partitioning(init, names, eager_sharding=False)


def kernel_init(config: BertConfig, names: tuple[str | None, ...]):
  # Like TF1's truncated_normal_initializer: N(0, s) cut at +-2s, no rescale.
  return _partitioned(
      nnx.initializers.truncated_normal(stddev=config.initializer_range),
      names)


def _vocab_table_init(config: BertConfig):
  """The true vocabulary's rows drawn as without padding, then zero rows.

  The same seed gives the padded model the unpadded one's weights (and so
  its numbers); the padding rows are never read.
  """
  normal = nnx.initializers.truncated_normal(stddev=config.initializer_range)

  def init(key, shape, dtype=jnp.float32):
    real = normal(key, (config.vocab_size, *shape[1:]), dtype)
    return jnp.pad(real, ((0, shape[0] - config.vocab_size),
                          *[(0, 0)] * (len(shape) - 1)))
  return _partitioned(init, ("vocab", "embed"))


def _zeros(names: tuple[str | None, ...]):
  return _partitioned(nnx.initializers.zeros_init(), names)


def _ones(names: tuple[str | None, ...]):
  return _partitioned(nnx.initializers.ones_init(), names)


def activation(name: str):
  return {
      "gelu": functools.partial(jax.nn.gelu, approximate=False),
      "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
      "relu": jax.nn.relu,
  }[name]


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
  """Inverted dropout; identity when `rng` is None (deterministic)."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      config.hidden_size, epsilon=config.layer_norm_eps,
      dtype=config.compute_dtype, param_dtype=config.params_dtype,
      scale_init=_ones(("embed",)), bias_init=_zeros(("embed",)),
      # The original computes E[(x - mean)^2], not E[x^2] - mean^2.
      use_fast_variance=False, rngs=rngs)


def dense(config: BertConfig, in_features: int, out_features: int,
          names: tuple[str | None, str | None], rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(
      in_features, out_features, dtype=config.compute_dtype,
      param_dtype=config.params_dtype, kernel_init=kernel_init(config, names),
      bias_init=_zeros((names[1],)), rngs=rngs)


def _split_key(rng: Array | None, n: int) -> list[Array | None]:
  return [None] * n if rng is None else list(jax.random.split(rng, n))


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  """Logical sharding constraint; a no-op outside a rules + mesh context."""
  return nn.with_logical_constraint(x, names)


class Embeddings(nnx.Module):
  """Token + position + segment embeddings, LayerNorm, dropout."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    emb = functools.partial(nnx.Embed, dtype=config.compute_dtype,
                            param_dtype=config.params_dtype, rngs=rngs)
    self.word_embeddings = emb(
        config.padded_vocab_size, config.hidden_size,
        embedding_init=_vocab_table_init(config))
    self.position_embeddings = emb(
        config.max_position_embeddings, config.hidden_size,
        embedding_init=kernel_init(config, (None, "embed")))
    self.token_type_embeddings = emb(
        config.type_vocab_size, config.hidden_size,
        embedding_init=kernel_init(config, (None, "embed")))
    self.layer_norm = layer_norm(config, rngs)

  def __call__(self, input_ids_BxL: Array, segment_ids_BxL: Array,
               position_ids_BxL: Array | None = None, *,
               rng: Array | None = None) -> Array:
    seq_len = input_ids_BxL.shape[-1]
    if position_ids_BxL is None:
      position_ids_BxL = jnp.arange(seq_len)[None, :]
    x_BxLxD = (self.word_embeddings(input_ids_BxL)
               + self.position_embeddings(position_ids_BxL)
               + self.token_type_embeddings(segment_ids_BxL))
    x_BxLxD = self.layer_norm(x_BxLxD)
    return dropout(x_BxLxD, self.config.hidden_dropout_prob, rng)


class SelfAttention(nnx.Module):
  """Multi-head self-attention with per-head projections ('heads', 'kv')."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    n, h, d = config.num_heads, config.head_dim, config.hidden_size

    def proj():
      return nnx.LinearGeneral(
          d, (n, h), dtype=config.compute_dtype,
          param_dtype=config.params_dtype,
          kernel_init=kernel_init(config, ("embed", "heads", "kv")),
          bias_init=_zeros(("heads", "kv")), rngs=rngs)

    self.query, self.key, self.value = proj(), proj(), proj()
    self.output = nnx.LinearGeneral(
        (n, h), d, axis=(-2, -1), dtype=config.compute_dtype,
        param_dtype=config.params_dtype,
        kernel_init=kernel_init(config, ("heads", "kv", "embed")),
        bias_init=_zeros(("embed",)), rngs=rngs)

  def __call__(self, x_BxLxD: Array, mask_Bx1xTxL: Array, *,
               rng: Array | None = None) -> Array:
    """`mask_Bx1xTxL`: which keys each query sees; T is 1 (the same keys
    for every query: padding) or L (packed rows: per query)."""
    cfg = self.config
    q_BxLxNxH = self.query(x_BxLxD)
    k_BxLxNxH = self.key(x_BxLxD)
    v_BxLxNxH = self.value(x_BxLxD)
    causal = cfg.attention == "causal"
    if rng is not None and cfg.attention_dropout_prob > 0:
      out_BxLxNxH = _attention_with_dropout(
          q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, mask_Bx1xTxL, causal,
          cfg.attention_dropout_prob, rng)
    else:
      out_BxLxNxH = jax.nn.dot_product_attention(
          q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, mask=mask_Bx1xTxL,
          is_causal=causal, implementation=cfg.attention_impl)
    out_BxLxNxH = constrain(
        out_BxLxNxH,
        ("activation_batch", "activation_length", "activation_heads", None))
    return self.output(out_BxLxNxH)


def _attention_with_dropout(q: Array, k: Array, v: Array, mask_Bx1xTxL: Array,
                            causal: bool, rate: float, rng: Array) -> Array:
  """Scaled dot-product attention with dropout on the probabilities."""
  seq_len = q.shape[1]
  logits_BxNxLxL = jnp.einsum("BTNH,BSNH->BNTS", q, k,
                              preferred_element_type=jnp.float32)
  logits_BxNxLxL *= q.shape[-1] ** -0.5
  mask = mask_Bx1xTxL
  if causal:
    mask = mask & jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
  logits_BxNxLxL = jnp.where(mask, logits_BxNxLxL,
                             jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits_BxNxLxL, axis=-1)
  probs = dropout(probs, rate, rng).astype(v.dtype)
  return jnp.einsum("BNTS,BSNH->BTNH", probs, v)


class EncoderLayer(nnx.Module):
  """One post-LN Transformer layer, as in the original."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.attention = SelfAttention(config, rngs=rngs)
    self.attention_layer_norm = layer_norm(config, rngs)
    self.intermediate = dense(config, config.hidden_size,
                              config.intermediate_size, ("embed", "mlp"), rngs)
    self.output = dense(config, config.intermediate_size, config.hidden_size,
                        ("mlp", "embed"), rngs)
    self.output_layer_norm = layer_norm(config, rngs)

  def __call__(self, x_BxLxD: Array, mask_Bx1xTxL: Array, *,
               rng: Array | None = None) -> Array:
    cfg = self.config
    rng_attn, rng_attn_out, rng_out = _split_key(rng, 3)
    attn = self.attention(x_BxLxD, mask_Bx1xTxL, rng=rng_attn)
    attn = dropout(attn, cfg.hidden_dropout_prob, rng_attn_out)
    x_BxLxD = self.attention_layer_norm(attn + x_BxLxD)
    h_BxLxF = activation(cfg.hidden_act)(self.intermediate(x_BxLxD))
    h_BxLxF = constrain(
        h_BxLxF, ("activation_batch", "activation_length", "activation_mlp"))
    y_BxLxD = dropout(self.output(h_BxLxF), cfg.hidden_dropout_prob, rng_out)
    x_BxLxD = self.output_layer_norm(y_BxLxD + x_BxLxD)
    return constrain(
        x_BxLxD, ("activation_batch", "activation_length", "activation_embed"))


_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute everything
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch":
        jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Encoder(nnx.Module):
  """`num_layers` EncoderLayers with stacked parameters."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> EncoderLayer:
      return EncoderLayer(config, rngs=rngs)

    self.layers = make_layers(rngs)

  def __call__(self, x_BxLxD: Array, mask_Bx1xTxL: Array, *,
               rng: Array | None = None,
               output_hidden_states: bool = False) -> tuple[Array, Array | None]:
    """Returns the last layer and, if asked, every layer's output [NL,B,L,D]."""
    cfg = self.config
    graphdef, params = nnx.split(self.layers)
    keys = (None if rng is None
            else jax.random.split(rng, cfg.num_layers))

    def body(x, layer_params, key):
      layer = nnx.merge(graphdef, layer_params)
      y = layer(x, mask_Bx1xTxL, rng=key)
      return y, (y if output_hidden_states else None)

    if cfg.remat_policy != "none":
      body = jax.checkpoint(body, policy=_REMAT_POLICIES[cfg.remat_policy],
                            prevent_cse=not cfg.scan_layers)

    if cfg.scan_layers:
      if keys is None:
        x_BxLxD, hidden = jax.lax.scan(
            lambda x, p: body(x, p, None), x_BxLxD, params)
      else:
        x_BxLxD, hidden = jax.lax.scan(
            lambda x, pk: body(x, *pk), x_BxLxD, (params, keys))
    else:
      outs = []
      for i in range(cfg.num_layers):
        layer_params = jax.tree.map(lambda p, i=i: p[i], params)
        x_BxLxD, h = body(x_BxLxD, layer_params,
                          None if keys is None else keys[i])
        outs.append(h)
      hidden = jnp.stack(outs) if output_hidden_states else None
    return x_BxLxD, hidden


class BertOutput(NamedTuple):
  sequence_output: Array  # [B, L, D], the last layer
  # [B, D], tanh(dense(sequence_output[:, 0])); causal models: of the last
  # real (unpadded) position instead.
  pooled_output: Array
  # [num_layers + 1, B, L, D]: the embeddings output, then every layer; only
  # with output_hidden_states=True.
  hidden_states: Array | None = None


class BertModel(nnx.Module):
  """The BERT encoder with its pooler."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = Embeddings(config, rngs=rngs)
    self.encoder = Encoder(config, rngs=rngs)
    self.pooler = dense(config, config.hidden_size, config.hidden_size,
                        ("embed", "mlp"), rngs)

  def __call__(self, input_ids_BxL: Array, segment_ids_BxL: Array | None = None,
               input_mask_BxL: Array | None = None, *,
               position_ids_BxL: Array | None = None, rng: Array | None = None,
               output_hidden_states: bool = False,
               pack_ids_BxL: Array | None = None,
               pool_at_N: Array | None = None) -> BertOutput:
    """Packed rows (see `finetune.FeatureBatches`): `pack_ids_BxL` numbers
    the examples of each row (0: padding), so that a token attends only to
    its own example's, with `position_ids_BxL` restarting at each; the
    pooler then reads the positions `pool_at_N` of the flattened [B * L]
    sequence output (one per example), and pooled_output is [N, D].
    """
    cfg = self.config
    if input_ids_BxL.shape[-1] > cfg.max_position_embeddings:
      raise ValueError(
          f"sequence length {input_ids_BxL.shape[-1]} exceeds "
          f"max_position_embeddings={cfg.max_position_embeddings}")
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.zeros_like(input_ids_BxL)
    if input_mask_BxL is None:
      input_mask_BxL = jnp.ones_like(input_ids_BxL)
    rng_emb, rng_enc = _split_key(rng, 2)
    x_BxLxD = self.embeddings(input_ids_BxL, segment_ids_BxL,
                              position_ids_BxL, rng=rng_emb)
    x_BxLxD = constrain(
        x_BxLxD, ("activation_batch", "activation_length", "activation_embed"))
    if pack_ids_BxL is None:
      mask = input_mask_BxL.astype(bool)[:, None, None, :]
    else:  # [B, 1, L, L]: block-diagonal, one block per example
      mask = ((pack_ids_BxL[:, :, None] == pack_ids_BxL[:, None, :])
              & (pack_ids_BxL[:, None, :] > 0))[:, None]
    seq_BxLxD, hidden = self.encoder(
        x_BxLxD, mask, rng=rng_enc,
        output_hidden_states=output_hidden_states)
    if pool_at_N is not None:
      summary_BxD = seq_BxLxD.reshape(-1, seq_BxLxD.shape[-1])[pool_at_N]
    elif cfg.attention == "causal":
      # Under causal attention [CLS] sees only itself; the last real token
      # (the final [SEP]) is the one that has read the whole input.
      last_B = jnp.maximum(jnp.sum(input_mask_BxL, axis=-1) - 1, 0)
      summary_BxD = jnp.take_along_axis(
          seq_BxLxD, last_B[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    else:
      summary_BxD = seq_BxLxD[:, 0]
    pooled_BxD = jnp.tanh(self.pooler(summary_BxD))
    if output_hidden_states:
      hidden = jnp.concatenate([x_BxLxD[None], hidden], axis=0)
    return BertOutput(seq_BxLxD, pooled_BxD, hidden)
