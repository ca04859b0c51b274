"""Task heads on the BERT encoder, and the models that pair them.

- Pre-training: masked LM at the gathered masked positions (decoder tied to
  the token embedding matrix, multiplied in float32, plus an output bias)
  and next-sentence prediction on the pooled output.
- Left-to-right LM (the paper's LTR ablation): the same tied decoder at every
  position of a causal encoder, predicting the next token.
- Fine-tuning: sequence classification / regression (GLUE), span start/end
  (SQuAD), token classification (NER), multiple choice (SWAG).
- The paper's BiLSTM variants: `bilstm=True` puts a randomly initialised
  bidirectional LSTM between the encoder and the classifier (Table 5's
  "+ BiLSTM"); `BertForTokenClassification(features=F)` is Table 7's
  feature-based NER: a frozen encoder (no gradient flows into it; the
  task also keeps the optimizer off it), features F from its layers, a
  two-layer BiLSTM and a classifier.

Logits are returned in float32 whatever the compute dtype; the losses here
are computed in float32 too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax import model as model_lib

Array = jax.Array
BertConfig = model_lib.BertConfig


class MaskedLMHead(nnx.Module):
  """dense(H) + activation + LayerNorm, then the tied decoder plus a bias."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.transform = model_lib.dense(config, config.hidden_size,
                                     config.hidden_size, ("embed", "mlp"), rngs)
    self.layer_norm = model_lib.layer_norm(config, rngs)
    self.output_bias = nnx.Param(
        model_lib._zeros(("vocab",))(rngs.params(),
                                     (config.padded_vocab_size,),
                                     config.params_dtype))

  def __call__(self, x_BxPxD: Array, embedding: nnx.Embed) -> Array:
    h_BxPxD = model_lib.activation(self.config.hidden_act)(
        self.transform(x_BxPxD))
    h_BxPxD = self.layer_norm(h_BxPxD)
    # The tied decoder reads the embedding matrix directly instead of calling
    # `embedding.attend`, which would multiply (and round the logits) in the
    # compute dtype: bf16 logits are off by up to 2^-9 of their size, enough
    # to move the softmax. The transform above may stay in bf16.
    table_VxD = embedding.embedding[...].astype(jnp.float32)
    logits_BxPxV = jnp.einsum("...d,vd->...v", h_BxPxD.astype(jnp.float32),
                              table_VxD)
    logits_BxPxV = logits_BxPxV + self.output_bias[...].astype(jnp.float32)
    return mask_padded_vocab(logits_BxPxV, self.config.vocab_size)


def mask_padded_vocab(logits_BxPxV: Array, vocab_size: int) -> Array:
  """Logits of the padding rows (ids >= vocab_size) at float32's minimum.

  Their softmax weight underflows to exactly 0 and argmax never picks them,
  so losses, accuracies and perplexities equal the unpadded model's; the
  mask also stops their gradient. The padded width stays: it is what the
  'vocab' axis shards evenly. `logits[..., :vocab_size]` are the real ones.
  """
  if logits_BxPxV.shape[-1] == vocab_size:
    return logits_BxPxV
  real_V = jnp.arange(logits_BxPxV.shape[-1]) < vocab_size
  return jnp.where(real_V, logits_BxPxV,
                   jnp.finfo(logits_BxPxV.dtype).min)


def gather_positions(x_BxLxD: Array, positions_BxP: Array) -> Array:
  """x[b, positions[b, p]] for every b, p."""
  return jnp.take_along_axis(x_BxLxD, positions_BxP[..., None], axis=1)


class PretrainingOutput(NamedTuple):
  # [B, P, V] at masked positions, [B, L, V] for LTR; V is the padded
  # vocabulary (padding masked: `mask_padded_vocab`).
  mlm_logits: Array
  nsp_logits: Array | None  # [B, 2]; None without NSP


class BertForPreTraining(nnx.Module):
  """Encoder + masked-LM head (+ NSP head unless `nsp=False`: No-NSP)."""

  def __init__(self, config: BertConfig, *, nsp: bool = True,
               rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.mlm = MaskedLMHead(config, rngs=rngs)
    self.nsp = (model_lib.dense(config, config.hidden_size, 2,
                                ("embed", None), rngs) if nsp else None)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               masked_lm_positions: Array, *,
               rng: Array | None = None) -> PretrainingOutput:
    out = self.bert(input_ids, segment_ids, input_mask, rng=rng)
    masked = gather_positions(out.sequence_output, masked_lm_positions)
    mlm_logits = self.mlm(masked, self.bert.embeddings.word_embeddings)
    nsp_logits = (None if self.nsp is None
                  else self.nsp(out.pooled_output).astype(jnp.float32))
    return PretrainingOutput(mlm_logits, nsp_logits)


class BertForLTR(nnx.Module):
  """Left-to-right LM: causal encoder, tied decoder at every position."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    if config.attention != "causal":
      raise ValueError("BertForLTR needs BertConfig(attention='causal'), got "
                       f"attention={config.attention!r}")
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.mlm = MaskedLMHead(config, rngs=rngs)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None) -> PretrainingOutput:
    out = self.bert(input_ids, segment_ids, input_mask, rng=rng)
    logits = self.mlm(out.sequence_output,
                      self.bert.embeddings.word_embeddings)
    return PretrainingOutput(logits, None)


# -- the BiLSTM of the paper's ablations ---------------------------------------

class BiLSTM(nnx.Module):
  """Stacked bidirectional LSTMs (flax's RNN, Bidirectional, OptimizedLSTMCell).

  Each layer runs one LSTM forward and one backward over the real
  (unpadded) tokens of each row and concatenates their outputs: [B, L, 2U]
  for U units per direction. The backward LSTM starts at each row's last
  real token (flax's `seq_lengths`), so padding changes nothing at real
  positions. Computed in float32; flax's default LSTM initialisers (LeCun
  normal inputs, orthogonal recurrence, zero biases); parameters are
  replicated (no logical axis names: the LSTM is small beside the encoder).
  """

  def __init__(self, in_features: int, units: int, num_layers: int, *,
               rngs: nnx.Rngs):
    if units <= 0 or num_layers <= 0:
      raise ValueError(f"BiLSTM: units={units} and num_layers={num_layers} "
                       "must be positive")
    self.units = units

    def direction(width):
      return nnx.RNN(nnx.OptimizedLSTMCell(width, units, rngs=rngs),
                     rngs=False)

    self.layers = nnx.List([
        nnx.Bidirectional(direction(in_features if i == 0 else 2 * units),
                          direction(in_features if i == 0 else 2 * units),
                          rngs=False)
        for i in range(num_layers)])

  def __call__(self, x_BxLxD: Array, mask_BxL: Array) -> Array:
    x = x_BxLxD.astype(jnp.float32)
    lengths_B = jnp.sum(mask_BxL.astype(jnp.int32), axis=-1)
    zeros = jnp.zeros((x.shape[0], self.units), jnp.float32)
    carry = (zeros, zeros)  # (c, h), both directions start at zero
    for layer in self.layers:
      x = layer(x, initial_carry=(carry, carry), seq_lengths=lengths_B)
    return x


def final_states(lstm_out_BxLx2U: Array, mask_BxL: Array) -> Array:
  """[B, 2U]: each direction's output after it has read the whole row.

  The forward LSTM's output at the last real token and the backward
  LSTM's at position 0 ([CLS]): a summary of the sequence for a classifier,
  the same for bidirectional and causal encoders (both directions have
  read every token, so no causal last-token pooling is needed).
  """
  units = lstm_out_BxLx2U.shape[-1] // 2
  last_B = jnp.maximum(jnp.sum(mask_BxL, axis=-1) - 1, 0).astype(jnp.int32)
  forward = jnp.take_along_axis(lstm_out_BxLx2U[..., :units],
                                last_B[:, None, None], axis=1)[:, 0]
  return jnp.concatenate([forward, lstm_out_BxLx2U[:, 0, units:]], axis=-1)


# Table 7's feature-based inputs, in the table's order.
FEATURES = ("embeddings", "second_to_last", "last", "sum_last4",
            "concat_last4", "sum_all")


def feature_layers(features: str, num_layers: int) -> list[int]:
  """Indices into `BertOutput.hidden_states` ([embeddings, layer 1, ...,
  layer N]) that features `features` reads."""
  if features not in FEATURES:
    raise ValueError(f"features={features!r} not in {FEATURES}")
  need = {"second_to_last": 2, "sum_last4": 4, "concat_last4": 4}.get(
      features, 1)
  if num_layers < need:
    raise ValueError(f"features={features!r} needs an encoder of at least "
                     f"{need} layers, this one has {num_layers}")
  n = num_layers
  return {"embeddings": [0], "second_to_last": [n - 1], "last": [n],
          "sum_last4": list(range(n - 3, n + 1)),
          "concat_last4": list(range(n - 3, n + 1)),
          "sum_all": list(range(1, n + 1))}[features]


def combine_features(hidden_NxBxLxD: Array, features: str,
                     layer_weights: Array | None = None) -> Array:
  """Table 7's features from the encoder's hidden states.

  `sum_last4` / `sum_all`: the paper's "weighted sum", taken as learned
  scalar weights, softmax-normalised (ELMo's scalar mix without its
  global scale): sum_j softmax(w)_j h_j, `layer_weights` = w (zeros at
  initialisation: the plain mean). `concat_last4`: the last four layers
  side by side, [B, L, 4D], the earliest first.
  """
  num_layers = hidden_NxBxLxD.shape[0] - 1
  picked = hidden_NxBxLxD[jnp.asarray(feature_layers(features, num_layers))]
  if features == "concat_last4":
    return jnp.concatenate(list(picked), axis=-1)
  if features in ("sum_last4", "sum_all"):
    w = jax.nn.softmax(layer_weights.astype(jnp.float32))
    return jnp.einsum("n,nbld->bld", w, picked.astype(jnp.float32))
  return picked[0]


def feature_width(features: str, hidden_size: int) -> int:
  return 4 * hidden_size if features == "concat_last4" else hidden_size


def _classifier(config: BertConfig, n: int, rngs: nnx.Rngs,
                in_features: int | None = None) -> nnx.Linear:
  if in_features is None:
    return model_lib.dense(config, config.hidden_size, n, ("embed", None),
                           rngs)
  # On a BiLSTM's output: no 'embed' axis to shard by.
  return model_lib.dense(config, in_features, n, (None, None), rngs)


def lstm_width(config: BertConfig, units: int) -> int:
  """A BiLSTM's units a direction: `units`, or 0 for the encoder's hidden
  size."""
  return units or config.hidden_size


def _bilstm(config: BertConfig, on: bool, units: int, layers: int,
            rngs: nnx.Rngs, in_features: int | None = None
            ) -> BiLSTM | None:
  """The optional BiLSTM, `lstm_width(config, units)` a direction."""
  if not on:
    return None
  return BiLSTM(in_features or config.hidden_size,
                lstm_width(config, units), layers, rngs=rngs)


def _head_width(config: BertConfig, lstm: BiLSTM | None) -> int | None:
  return None if lstm is None else 2 * lstm.units


def _no_lstm_when_packed(lstm: BiLSTM | None, packed) -> None:
  if packed is not None and lstm is not None:
    raise ValueError("a BiLSTM head reads whole rows: it cannot read "
                     "packed examples")


def packed_sequence(bert: model_lib.BertModel, input_ids: Array,
                    segment_ids: Array, input_mask: Array,
                    packed: dict[str, Array], *, rng: Array | None = None,
                    ) -> Array:
  """The encoder over packed rows (see `finetune.FeatureBatches`), its
  output gathered back to one example a row: [B, L, D], L the rows'
  length (`example_mask` [B, L] says which positions are the example's);
  `packed` holds `position_ids`, `pack_ids` and `unpack_at`."""
  out = bert(input_ids, segment_ids, input_mask, rng=rng,
             position_ids_BxL=packed["position_ids"],
             pack_ids_BxL=packed["pack_ids"])
  seq = out.sequence_output
  return seq.reshape(-1, seq.shape[-1])[packed["unpack_at"]]


class BertForSequenceClassification(nnx.Module):
  """GLUE: a linear layer on the pooled [CLS]; num_labels=1 is regression.

  With `bilstm=True` (Table 5's "+ BiLSTM"), a BiLSTM of `lstm_layers`
  layers and `lstm_units` units per direction (0: the encoder's width)
  reads the sequence output, and the classifier reads its `final_states`
  instead of the pooler.
  """

  def __init__(self, config: BertConfig, num_labels: int, *,
               bilstm: bool = False, lstm_units: int = 0,
               lstm_layers: int = 1, rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.lstm = _bilstm(config, bilstm, lstm_units, lstm_layers, rngs)
    self.classifier = _classifier(config, num_labels, rngs,
                                  _head_width(config, self.lstm))

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None,
               packed: dict[str, Array] | None = None) -> Array:
    """`packed`: packed rows (`position_ids`, `pack_ids`, and `pool_at`,
    each example's summary position); the logits are then one per example.
    """
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    _no_lstm_when_packed(self.lstm, packed)
    if packed is not None:
      out = self.bert(input_ids, segment_ids, input_mask, rng=rng_bert,
                      position_ids_BxL=packed["position_ids"],
                      pack_ids_BxL=packed["pack_ids"],
                      pool_at_N=packed["pool_at"])
    else:
      out = self.bert(input_ids, segment_ids, input_mask, rng=rng_bert)
    if self.lstm is None:
      pooled = out.pooled_output
    else:
      pooled = final_states(self.lstm(out.sequence_output, input_mask),
                            input_mask)
    pooled = model_lib.dropout(pooled, self.config.hidden_dropout_prob,
                               rng_drop)
    return self.classifier(pooled).astype(jnp.float32)


class BertForQuestionAnswering(nnx.Module):
  """SQuAD: start and end logits from one linear layer over the sequence.

  With `bilstm=True` (Table 5's "+ BiLSTM"), the linear layer reads a
  BiLSTM's outputs over the sequence output instead.
  """

  def __init__(self, config: BertConfig, *, bilstm: bool = False,
               lstm_units: int = 0, lstm_layers: int = 1, rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.lstm = _bilstm(config, bilstm, lstm_units, lstm_layers, rngs)
    self.qa_outputs = _classifier(config, 2, rngs,
                                  _head_width(config, self.lstm))

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None,
               packed: dict[str, Array] | None = None
               ) -> tuple[Array, Array]:
    """`packed`: packed rows (see `packed_sequence`); the logits are then
    [B, L] one example a row, as unpacked."""
    _no_lstm_when_packed(self.lstm, packed)
    if packed is not None:
      seq = packed_sequence(self.bert, input_ids, segment_ids, input_mask,
                            packed, rng=rng)
    else:
      seq = self.bert(input_ids, segment_ids, input_mask,
                      rng=rng).sequence_output
    if self.lstm is not None:
      seq = self.lstm(seq, input_mask)
    logits_BxLx2 = self.qa_outputs(seq).astype(jnp.float32)
    return logits_BxLx2[..., 0], logits_BxLx2[..., 1]


class BertForTokenClassification(nnx.Module):
  """NER: a label per token (the first sub-token of each word is scored).

  `bilstm=True`: a BiLSTM between the fine-tuned encoder and the
  classifier. `features=F` (one of FEATURES): Table 7's feature-based
  approach: the encoder is frozen (run without dropout, its outputs under
  stop_gradient), features F of its hidden states feed a BiLSTM (the
  paper's: two layers of 768 units, `lstm_layers` / `lstm_units`) and the
  classifier; `layer_weights` holds the scalar mix of the weighted sums.
  """

  def __init__(self, config: BertConfig, num_labels: int, *,
               bilstm: bool = False, features: str = "",
               lstm_units: int = 0, lstm_layers: int = 1,
               rngs: nnx.Rngs):
    self.config = config
    self.features = features
    self.bert = model_lib.BertModel(config, rngs=rngs)
    width, mix = None, None
    if features:
      n = len(feature_layers(features, config.num_layers))
      if features in ("sum_last4", "sum_all"):
        mix = nnx.Param(jnp.zeros((n,), jnp.float32))
      width = feature_width(features, config.hidden_size)
    self.layer_weights = mix
    self.lstm = _bilstm(config, bilstm or bool(features), lstm_units,
                        lstm_layers, rngs, width)
    self.classifier = _classifier(config, num_labels, rngs,
                                  _head_width(config, self.lstm))

  def encode(self, input_ids: Array, segment_ids: Array, input_mask: Array,
             *, rng: Array | None = None,
             packed: dict[str, Array] | None = None) -> Array:
    """What the BiLSTM (or the classifier) reads: [B, L, D or 4D]."""
    if packed is not None:
      if self.features:
        raise ValueError("the feature-based model reads whole rows: it "
                         "cannot read packed examples")
      return packed_sequence(self.bert, input_ids, segment_ids, input_mask,
                             packed, rng=rng)
    if not self.features:
      return self.bert(input_ids, segment_ids, input_mask,
                       rng=rng).sequence_output
    if self.features == "embeddings":  # no need to run the layers
      return jax.lax.stop_gradient(
          self.bert.embeddings(input_ids, segment_ids))
    hidden = self.bert(input_ids, segment_ids, input_mask,
                       output_hidden_states=True).hidden_states
    weights = None if self.layer_weights is None else self.layer_weights[...]
    return combine_features(jax.lax.stop_gradient(hidden), self.features,
                            weights)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None,
               packed: dict[str, Array] | None = None) -> Array:
    """`packed`: packed rows (see `packed_sequence`); the logits are then
    [B, L, labels] one example a row, as unpacked."""
    _no_lstm_when_packed(self.lstm, packed)
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    seq = self.encode(input_ids, segment_ids, input_mask, rng=rng_bert,
                      packed=packed)
    if self.lstm is not None:
      seq = self.lstm(seq, input_mask)
    seq = model_lib.dropout(seq, self.config.hidden_dropout_prob, rng_drop)
    return self.classifier(seq).astype(jnp.float32)


class BertForMultipleChoice(nnx.Module):
  """SWAG: one score per (context, ending) from [CLS], softmax over choices.

  Inputs are [B, C, L]; the logits are [B, C].
  """

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.classifier = _classifier(config, 1, rngs)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None,
               packed: dict[str, Array] | None = None) -> Array:
    """`packed`: packed rows of every choice (`position_ids`, `pack_ids`,
    and `pool_at` [B, C], each choice's summary position)."""
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    if packed is not None:
      b, c = packed["pool_at"].shape
      pooled = self.bert(input_ids, segment_ids, input_mask, rng=rng_bert,
                         position_ids_BxL=packed["position_ids"],
                         pack_ids_BxL=packed["pack_ids"],
                         pool_at_N=packed["pool_at"].reshape(-1)
                         ).pooled_output
    else:
      b, c, length = input_ids.shape
      flat = lambda x: x.reshape(b * c, length)
      pooled = self.bert(flat(input_ids), flat(segment_ids),
                         flat(input_mask), rng=rng_bert).pooled_output
    pooled = model_lib.dropout(pooled, self.config.hidden_dropout_prob,
                               rng_drop)
    return self.classifier(pooled).astype(jnp.float32).reshape(b, c)


def pretraining_loss(
    output: PretrainingOutput, batch: dict[str, Array],
    denominators: tuple[Array, Array] | None = None,
) -> tuple[Array, dict[str, Array]]:
  """The original objective: weighted mean masked-LM loss + mean NSP loss.

  As in TF1 `run_pretraining.py`, the MLM loss is
  sum(w * nll) / (sum(w) + 1e-5) over the padded prediction slots.
  `denominators` = (sum of MLM weights, number of sequences) of the whole
  batch, for a micro-batch of it (gradient accumulation): the micro-batch
  losses then add up to the full batch's loss exactly.
  Returns the loss and per-batch sums for metrics (so they average exactly
  across steps and hosts).
  """
  logits = output.mlm_logits.astype(jnp.float32)
  labels = batch["masked_lm_ids"]
  weights = batch["masked_lm_weights"].astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  denom = jnp.sum(weights)
  total_weight, num_seqs = (denominators if denominators is not None
                            else (denom, labels.shape[0]))
  mlm_loss = jnp.sum(nll * weights) / (total_weight + 1e-5)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  metrics = {
      "mlm_loss_sum": jnp.sum(nll * weights),
      "mlm_correct": jnp.sum(correct * weights),
      "mlm_weight": denom,
  }
  loss = mlm_loss
  if output.nsp_logits is not None:
    nsp_labels = batch["next_sentence_labels"].reshape(-1)
    nsp_nll = optax.softmax_cross_entropy_with_integer_labels(
        output.nsp_logits.astype(jnp.float32), nsp_labels)
    loss = loss + jnp.sum(nsp_nll) / num_seqs
    metrics.update(
        nsp_loss_sum=jnp.sum(nsp_nll),
        nsp_correct=jnp.sum(
            (jnp.argmax(output.nsp_logits, -1) == nsp_labels)
            .astype(jnp.float32)),
        nsp_count=jnp.asarray(nsp_labels.shape[0], jnp.float32),
    )
  return loss, metrics


def ltr_loss(output: PretrainingOutput, batch: dict[str, Array],
             denominators: tuple[Array, Array] | None = None
             ) -> tuple[Array, dict[str, Array]]:
  """Next-token loss of the LTR model over the real (unpadded) positions.

  `denominators[0]`, if given, is the whole batch's count of predicted
  positions (for gradient accumulation, as in `pretraining_loss`).
  """
  logits = output.mlm_logits[:, :-1].astype(jnp.float32)
  labels = batch["input_ids"][:, 1:]
  weights = batch["input_mask"][:, 1:].astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  denom = jnp.sum(weights)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  metrics = {
      "lm_loss_sum": jnp.sum(nll * weights),
      "lm_correct": jnp.sum(correct * weights),
      "lm_weight": denom,
  }
  total = denominators[0] if denominators is not None else denom
  return jnp.sum(nll * weights) / (total + 1e-5), metrics
