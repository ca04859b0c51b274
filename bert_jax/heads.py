"""Task heads on the BERT encoder, and the models that pair them.

- Pre-training: masked LM at the gathered masked positions (decoder tied to
  the token embedding matrix, multiplied in float32, plus an output bias)
  and next-sentence prediction on the pooled output.
- Left-to-right LM (the paper's LTR ablation): the same tied decoder at every
  position of a causal encoder, predicting the next token.
- Fine-tuning: sequence classification / regression (GLUE), span start/end
  (SQuAD), token classification (NER), multiple choice (SWAG).

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


def _classifier(config: BertConfig, n: int, rngs: nnx.Rngs) -> nnx.Linear:
  return model_lib.dense(config, config.hidden_size, n, ("embed", None), rngs)


class BertForSequenceClassification(nnx.Module):
  """GLUE: a linear layer on the pooled [CLS]; num_labels=1 is regression."""

  def __init__(self, config: BertConfig, num_labels: int, *,
               rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.classifier = _classifier(config, num_labels, rngs)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None) -> Array:
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    pooled = self.bert(input_ids, segment_ids, input_mask,
                       rng=rng_bert).pooled_output
    pooled = model_lib.dropout(pooled, self.config.hidden_dropout_prob,
                               rng_drop)
    return self.classifier(pooled).astype(jnp.float32)


class BertForQuestionAnswering(nnx.Module):
  """SQuAD: start and end logits from one linear layer over the sequence."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.qa_outputs = _classifier(config, 2, rngs)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None) -> tuple[Array, Array]:
    seq = self.bert(input_ids, segment_ids, input_mask,
                    rng=rng).sequence_output
    logits_BxLx2 = self.qa_outputs(seq).astype(jnp.float32)
    return logits_BxLx2[..., 0], logits_BxLx2[..., 1]


class BertForTokenClassification(nnx.Module):
  """NER: a label per token (the first sub-token of each word is scored)."""

  def __init__(self, config: BertConfig, num_labels: int, *,
               rngs: nnx.Rngs):
    self.config = config
    self.bert = model_lib.BertModel(config, rngs=rngs)
    self.classifier = _classifier(config, num_labels, rngs)

  def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
               *, rng: Array | None = None) -> Array:
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    seq = self.bert(input_ids, segment_ids, input_mask,
                    rng=rng_bert).sequence_output
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
               *, rng: Array | None = None) -> Array:
    b, c, length = input_ids.shape
    flat = lambda x: x.reshape(b * c, length)
    rng_bert, rng_drop = model_lib._split_key(rng, 2)
    pooled = self.bert(flat(input_ids), flat(segment_ids), flat(input_mask),
                       rng=rng_bert).pooled_output
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
