"""Sentence (pair) classification and regression: GLUE and labelled TSV sets.

The original `run_classifier.py` on the one training loop: `[CLS] A [SEP]
B [SEP]` features truncated the TF1 way, a linear layer on the pooled
[CLS] vector (dropout 0.1 before it), mean cross-entropy (mean squared
error for STS-B), dev metrics at the end under TF1's names, predictions for
every eval split, GLUE-server submission files for the test splits (and
AX from the MNLI model), and the fine-tuned model exported for
transformers' `BertForSequenceClassification`.
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
from bert_jax import tokenization
from bert_jax.tasks import base
from bert_jax.tasks import glue

TASK_NAMES = (*glue.GLUE_NAMES, "custom")


class _Split:
  """One split's examples and features."""

  def __init__(self, name, examples, features, labels):
    self.name = name
    self.examples = examples
    self.features = features
    self.labels = labels  # None for test splits


class ClassificationTask(base.Task):
  """A GLUE task (or `custom`) for the fine-tuning job."""

  objective = "classification"

  def __init__(self, config):
    super().__init__(config)
    self.name = config.task
    self._spec: glue.GlueTask | None = None
    self.progress_metric = "accuracy"
    self._encoder: finetune.Encoder | None = None
    self._train: _Split | None = None
    self._evals: list[_Split] = []
    self._tests: list[_Split] = []
    self._last_eval: dict[str, np.ndarray] = {}
    self._skipped: dict[str, Any] = {}

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

  def validate(self, check) -> None:
    c = self.config
    check(bool(c.data_dir), "config.data_dir is empty: point it at the "
          f"{self.name} data")
    check(os.path.exists(c.data_dir) or c.data_dir.startswith("tfds:"),
          f"config.data_dir={c.data_dir!r} does not exist")
    try:
      self.spec  # pylint: disable=pointless-statement
    except (ValueError, FileNotFoundError) as e:
      check(False, f"config.data_dir={c.data_dir!r}: {e}")
    check(c.num_train_epochs > 0,
          f"config.num_train_epochs={c.num_train_epochs} must be > 0")
    check(0 <= c.warmup_proportion < 1,
          f"config.warmup_proportion={c.warmup_proportion} must be in [0, 1)")
    check(c.max_seq_length >= 3,
          f"config.max_seq_length={c.max_seq_length} must be >= 3")
    if c.init_checkpoint:
      check(os.path.exists(c.init_checkpoint) or os.path.exists(
          c.init_checkpoint + ".index"),
            f"config.init_checkpoint={c.init_checkpoint!r} does not exist")
    try:
      cfg = self.model_config()
    except (ValueError, FileNotFoundError, KeyError) as e:
      msg = str(e).strip('"')
      check(False, msg if msg.startswith("config.")
            else f"config.init_checkpoint={c.init_checkpoint!r}: {msg}")
    check(c.max_seq_length <= cfg.max_position_embeddings,
          f"config.max_seq_length={c.max_seq_length} is longer than the "
          f"checkpoint's position table ({cfg.max_position_embeddings})")

  @property
  def encoder(self) -> finetune.Encoder:
    if self._encoder is None:
      self._encoder = finetune.load_encoder(self.config)
    return self._encoder

  @property
  def vocab_file(self) -> str:
    return self.encoder.vocab_file

  def model_config(self):
    return self.encoder.config

  def prepare(self, workdir: str) -> None:
    del workdir
    try:
      self._read_data()
    except (ValueError, FileNotFoundError, KeyError) as e:
      # Bad files are bad input: one line naming them, before any step.
      raise base.ConfigError(str(e).strip('"')) from e

  def _read_data(self) -> None:
    c = self.config
    tok = tokenization.create_tokenizer(self.vocab_file, c.do_lower_case)
    finetune.check_vocab(self.encoder, tok)

    def load(split, with_labels):
      examples, stats = glue.read_examples(self.spec, c.data_dir, split)
      if stats.skipped:
        self._skipped[split] = stats.skipped
      if not examples:
        raise ValueError(f"{c.data_dir}: the {split} split of {self.name} "
                         "has no examples")
      enc = tok.encode_pair_batch([(e.text_a, e.text_b) for e in examples],
                                  c.max_seq_length)
      features = {k: enc[k] for k in ("input_ids", "input_mask",
                                      "segment_ids")}
      labels = (glue.label_array(self.spec, examples) if with_labels
                else None)
      if labels is not None:
        features["labels"] = labels
      return _Split(split, examples, features, labels)

    self._train = load("train", True)
    self._evals = [load(s, True) for s in self.spec.eval_splits]
    self._tests = [load(s, False) for s in self.spec.test_splits
                   if glue.has_split(self.spec, c.data_dir, s)]
    if jax.process_index() == 0:
      sizes = ", ".join(f"{s.name} {len(s.examples)}"
                        for s in [self._train, *self._evals, *self._tests])
      print(f"{self.name}: {sizes} examples; {self.init_report}",
            flush=True)

  # -- the model and objective -------------------------------------------

  @property
  def num_labels(self) -> int:
    return 1 if self.regression else len(self.spec.labels)

  def build_model(self, cfg, rngs):
    return heads.BertForSequenceClassification(cfg, self.num_labels,
                                               rngs=rngs)

  def pretrained_params(self):
    params = self.encoder.params
    return None if params is None else {"bert": params}

  def _logits(self, model, batch, rng):
    return model(batch["input_ids"], batch["segment_ids"],
                 batch["input_mask"], rng=rng)

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

  def summarize_train(self, sums):
    n = max(sums["example_count"], 1e-9)
    out = {"loss": sums["loss_sum"] / n}
    if "accuracy_correct" in sums:
      out["accuracy"] = sums["accuracy_correct"] / n
    return out

  def batch_spec(self, batch_size, seq_len=None):
    seq_len = seq_len or self.config.max_seq_length
    return {
        "input_ids": ((batch_size, seq_len), jnp.int32),
        "input_mask": ((batch_size, seq_len), jnp.int32),
        "segment_ids": ((batch_size, seq_len), jnp.int32),
        "labels": ((batch_size,),
                   jnp.float32 if self.regression else jnp.int32),
        "example_index": ((batch_size,), jnp.int32),
    }

  # -- data --------------------------------------------------------------

  def num_train_steps(self) -> int:
    return finetune.num_train_steps(len(self._train.examples),
                                    self.config.train_batch_size,
                                    self.config.num_train_epochs)

  def num_warmup_steps(self) -> int:
    return int(self.num_train_steps() * self.config.warmup_proportion)

  def train_data(self, batch_sharding):
    c = self.config
    ds = finetune.FeatureBatches(
        self._train.features, global_batch_size=c.train_batch_size,
        seed=c.seed, train=True, num_epochs=c.num_train_epochs,
        pad_to_multiple_of=c.pad_to_multiple_of,
        length_bucketing_window=c.length_bucketing_window)
    self._batch_sharding = batch_sharding
    return base.TrainData(finetune.iterator(ds, batch_sharding),
                          lambda step: (c.train_batch_size,
                                        c.max_seq_length, 0))

  def _outputs(self, run_eval, split: _Split) -> np.ndarray:
    c = self.config
    ds = finetune.FeatureBatches(
        split.features, global_batch_size=c.eval_batch_size, seed=c.seed,
        train=False, pad_to_multiple_of=c.pad_to_multiple_of)
    it = finetune.iterator(ds, self._batch_sharding)
    try:
      outputs = run_eval(iter(it))
    finally:
      it.close()
    return finetune.gather_predictions(outputs, len(split.examples))

  # -- evaluation --------------------------------------------------------

  def eval_outputs(self, model, batch):
    return {"logits": self._logits(model, batch, None),
            "example_index": batch["example_index"]}

  def predictions(self, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if self.regression else np.argmax(logits, -1)

  def evaluate(self, run_eval, step):
    del step
    metrics: dict[str, Any] = {}
    for i, split in enumerate(self._evals):
      logits = self._outputs(run_eval, split)
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

  def finish(self, params, workdir, run_eval):
    out: dict[str, Any] = {"init_checkpoint": self.config.init_checkpoint,
                           "init": self.init_report}
    if self._skipped:
      out["skipped_rows"] = self._skipped
    files = {}
    for split in self._evals:
      logits = self._last_eval[split.name]
      preds = self.predictions(logits)
      if jax.process_index() == 0:
        files[split.name] = finetune.write_tsv(
            os.path.join(workdir, "predictions", f"{split.name}.tsv"),
            ["guid", "prediction", "label"],
            zip((e.guid for e in split.examples), self._labels_of(preds),
                (e.label for e in split.examples)))
    for split in self._tests:
      preds = self.predictions(self._outputs(run_eval, split))
      if jax.process_index() == 0:
        files[split.name] = glue.write_submission(
            self.spec, split.name, [e.guid for e in split.examples], preds,
            os.path.join(workdir, "submission"))
    out["predictions"] = files
    if self.config.export and self.model_config().attention == "causal":
      # Nothing in transformers pools a causal BERT's last token.
      out["export_skipped"] = ("causal (LTR) classifier: no transformers "
                               "architecture computes it; the Orbax "
                               "checkpoint in the workdir is the model")
    elif self.config.export:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      params = multihost_utils.process_allgather(params, tiled=True)
      if jax.process_index() == 0:
        out["checkpoints"] = {"hf": pretrained.export_hf_classifier(
            self.model_config().replace(dtype="float32"),
            pretrained.jax_to_numpy(params), self.vocab_file,
            os.path.join(workdir, "export", "hf"),
            labels=None if self.regression else list(self.spec.labels))}
    return out

  @property
  def init_report(self) -> str:
    """Where the encoder came from, and what starts fresh (the head)."""
    std = self.encoder.config.initializer_range
    return (f"{self.encoder.report}; classifier ({self.num_labels} "
            f"output{'s' if self.num_labels > 1 else ''}) freshly "
            f"initialised: truncated normal, stddev {std:g}")

  def results_header(self):
    return {"task": self.name}
