"""Sentence (pair) classification and regression: GLUE and labelled TSV sets.

The original `run_classifier.py` on the one training loop: `[CLS] A [SEP]
B [SEP]` features truncated the TF1 way, a linear layer on the pooled
[CLS] vector (dropout 0.1 before it), mean cross-entropy (mean squared
error for STS-B), dev metrics at the end under TF1's names, predictions for
every eval split, GLUE-server submission files for the test splits (and
AX from the MNLI model), and the fine-tuned model exported for
transformers' `BertForSequenceClassification`. With `config.bilstm`
(Table 5's "+ BiLSTM") a BiLSTM reads the sequence output and the
classifier its two directions' final states (`heads.final_states`: the
forward LSTM at the last real token, the backward one at [CLS]), for
bidirectional and causal encoders alike; such a model has no transformers
architecture and is not exported.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import finetune
from bert_jax import heads
from bert_jax import pretrained
from bert_jax.tasks import finetuning
from bert_jax.tasks import glue

TASK_NAMES = (*glue.GLUE_NAMES, "custom")


class ClassificationTask(finetuning.FinetuneTask):
  """A GLUE task (or `custom`) for the fine-tuning job."""

  objective = "classification"
  can_pack = True

  def __init__(self, config):
    super().__init__(config)
    self._spec: glue.GlueTask | None = None
    self._last_eval: dict[str, np.ndarray] = {}

  # -- set-up ------------------------------------------------------------

  @property
  def spec(self) -> glue.GlueTask:
    """The task's labels, splits and metric (a custom set's read lazily)."""
    if self._spec is None:
      self._spec = glue.task_spec(self.name, self.config.data_dir,
                                  tuple(self.config.labels) or None)
      if self._spec.labels is None:
        self.progress_metric = ""
    return self._spec

  @property
  def regression(self) -> bool:
    return self.spec.labels is None

  def validate_data(self, check) -> None:
    try:
      self.spec  # pylint: disable=pointless-statement
    except (ValueError, FileNotFoundError) as e:
      check(False, f"config.data_dir={self.config.data_dir!r}: {e}")

  def read_data(self, tokenizer) -> None:
    c = self.config

    def load(split, with_labels):
      examples, stats = glue.read_examples(self.spec, c.data_dir, split)
      if stats.skipped:
        self.skipped[split] = stats.skipped
      if not examples:
        raise ValueError(f"{c.data_dir}: the {split} split of {self.name} "
                         "has no examples")
      enc = tokenizer.encode_pair_batch(
          [(e.text_a, e.text_b) for e in examples], c.max_seq_length)
      features = {k: enc[k] for k in ("input_ids", "input_mask",
                                      "segment_ids")}
      labels = (glue.label_array(self.spec, examples) if with_labels
                else None)
      if labels is not None:
        features["labels"] = labels
      return finetuning.Split(split, examples, features, labels)

    self.train = load("train", True)
    self.evals = [load(s, True) for s in self.spec.eval_splits]
    self.tests = [load(s, False) for s in self.spec.test_splits
                  if glue.has_split(self.spec, c.data_dir, s)]

  def sibling_inputs(self):
    return ("diagnostic",) if self.name == "mnli" else ()

  def head_description(self) -> str:
    n = self.num_labels
    return f"classifier ({n} output{'s' if n > 1 else ''})"

  # -- the model and objective -------------------------------------------

  @property
  def num_labels(self) -> int:
    return 1 if self.regression else len(self.spec.labels)

  def build_model(self, cfg, rngs):
    c = self.config
    if not self.uses_bilstm:
      return heads.BertForSequenceClassification(cfg, self.num_labels,
                                                 rngs=rngs)
    return heads.BertForSequenceClassification(
        cfg, self.num_labels, bilstm=True, lstm_units=c.lstm_units,
        lstm_layers=c.lstm_layers, rngs=rngs)

  def _logits(self, model, batch, rng):
    return model(batch["input_ids"], batch["segment_ids"],
                 batch["input_mask"], rng=rng,
                 packed=self.packed_inputs(batch))

  def _per_example_loss(self, logits, labels):
    """Squared error (regression) or cross-entropy, one value per row."""
    if self.regression:
      err = logits[:, 0] - jnp.asarray(labels, jnp.float32)
      return err * err
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

  def loss(self, model, batch, rng, denominators=None):
    logits = self._logits(model, batch, rng)
    n = (denominators[0] if denominators is not None
         else jnp.float32(logits.shape[0]))
    per_example = self._per_example_loss(logits, batch["labels"])
    sums = {"loss_sum": jnp.sum(per_example),
            "example_count": jnp.float32(logits.shape[0])}
    if not self.regression:
      sums["accuracy_correct"] = jnp.sum(
          (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32))
    return jnp.sum(per_example) / n, sums

  def batch_spec(self, batch_size, seq_len=None):
    """Packed batches: at most one row per example (every example long)."""
    seq_len = seq_len or self.config.max_seq_length
    spec = (self.packed_spec(batch_size, seq_len) if self.packs else
            {k: ((batch_size, seq_len), jnp.int32)
             for k in ("input_ids", "input_mask", "segment_ids")})
    spec["labels"] = ((batch_size,),
                      jnp.float32 if self.regression else jnp.int32)
    spec["example_index"] = ((batch_size,), jnp.int32)
    return spec

  # -- evaluation --------------------------------------------------------

  def eval_outputs(self, model, batch):
    return {"logits": self._logits(model, batch, None),
            "example_index": batch["example_index"]}

  def predictions(self, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if self.regression else np.argmax(logits, -1)

  def evaluate(self, run_eval, step):
    del step
    metrics: dict[str, Any] = {}
    for i, split in enumerate(self.evals):
      logits = self.split_outputs(run_eval, split)["logits"]
      self._last_eval[split.name] = logits
      m = glue.compute_metrics(self.spec, self.predictions(logits),
                               split.labels)
      m["eval_loss"] = float(np.mean(
          self._per_example_loss(logits, split.labels)))
      # The first eval split keeps TF1's names; others say which they are
      # (MNLI: eval_accuracy is matched, eval_mismatched_accuracy).
      tag = "" if i == 0 else split.name.replace("dev_", "") + "_"
      metrics.update({k.replace("eval_", f"eval_{tag}", 1): v
                      for k, v in m.items()})
    return metrics

  def _labels_of(self, predictions: np.ndarray) -> list[Any]:
    if self.regression:
      return [f"{p:.4f}" for p in predictions]
    return [self.spec.labels[int(p)] for p in predictions]

  def write_outputs(self, params, workdir, run_eval):
    out: dict[str, Any] = {}
    files = {}
    for split in self.evals:
      logits = self._last_eval[split.name]
      preds = self.predictions(logits)
      if jax.process_index() == 0:
        files[split.name] = finetune.write_tsv(
            os.path.join(workdir, "predictions", f"{split.name}.tsv"),
            ["guid", "prediction", "label"],
            zip((e.guid for e in split.examples), self._labels_of(preds),
                (e.label for e in split.examples)))
    for split in self.tests:
      preds = self.predictions(
          self.split_outputs(run_eval, split)["logits"])
      if jax.process_index() == 0:
        files[split.name] = glue.write_submission(
            self.spec, split.name, [e.guid for e in split.examples], preds,
            os.path.join(workdir, "submission"))
    out["predictions"] = files
    out.update(self.export_hf(
        params, workdir, pretrained.export_hf_classifier,
        labels=None if self.regression else list(self.spec.labels)))
    return out

