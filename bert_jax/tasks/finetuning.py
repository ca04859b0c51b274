"""What every fine-tuning task does the same way, on top of `base.Task`.

A fine-tuning task (GLUE classification, SQuAD spans, SWAG choices, NER
tags) starts from the encoder named by `config.init_checkpoint`, reads its
splits into feature arrays once (`read_data`), trains on shuffled,
dynamically padded batches of them (`finetune.FeatureBatches`), evaluates
on every example of each eval split exactly once, and reports where its
encoder came from and which head starts fresh. A subclass supplies:

- `read_data(tokenizer)`: fills `self.train`, `self.evals` (and
  `self.tests`) with `Split`s; errors are bad input (ValueError /
  FileNotFoundError / KeyError naming the file, line or key);
- the model and objective (`build_model`, `loss`, `batch_spec`,
  `eval_outputs`, `evaluate`) and `head_description()` for the report;
- optionally `write_outputs(params, workdir, run_eval)`: prediction files
  and exports at the end.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import finetune
from bert_jax import heads
from bert_jax import storage
from bert_jax import tokenization
from bert_jax.tasks import base


@dataclasses.dataclass
class Split:
  """One split: its examples, their feature arrays, and anything else.

  `features` holds arrays with one row per *feature* (for SQuAD a window
  of a document, for SWAG an example of C choices); `num_features` rows.
  `labels` is None for a test split. `extra` carries what post-processing
  needs (e.g. SQuAD's window-to-example maps).
  """
  name: str
  examples: Sequence[Any]
  features: dict[str, np.ndarray]
  labels: Any = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_features(self) -> int:
    return len(self.features["input_ids"])


class FinetuneTask(base.Task):
  """The shared half of every fine-tuning task."""

  objective = "finetune"

  def __init__(self, config):
    super().__init__(config)
    self.name = config.task
    self.progress_metric = "accuracy"
    self._encoder: finetune.Encoder | None = None
    self.train: Split | None = None
    self.evals: list[Split] = []
    self.tests: list[Split] = []
    # split name -> what the reader skipped (counted, as the original does)
    self.skipped: dict[str, Any] = {}
    self._batch_sharding = None
    # config key -> the gs:// URL it named (self.config then names a local
    # copy); see `localize_inputs`.
    self.urls: dict[str, str] = {}
    self._localized = False

  # -- checks --------------------------------------------------------------

  def validate(self, check) -> None:
    check(bool(self.config.data_dir), "config.data_dir is empty: point it "
          f"at the {self.name} data")
    try:
      self.localize_inputs()
    except FileNotFoundError as e:
      check(False, str(e))
    check = self._naming_urls(check)
    c = self.config
    check(os.path.exists(c.data_dir) or c.data_dir.startswith("tfds:"),
          f"config.data_dir={c.data_dir!r} does not exist")
    self.validate_data(check)
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

  def validate_data(self, check) -> None:
    """Task-specific checks of config.data_dir and the task's own keys."""
    del check

  # -- gs:// inputs --------------------------------------------------------

  def localize_inputs(self) -> None:
    """gs:// inputs become verified local copies, once, for every task.

    The readers (TSV, JSON, CoNLL files; every checkpoint format) read
    local files: `config.data_dir`, `config.init_checkpoint` and
    `config.vocab_file` given as gs:// URLs are downloaded to the cache
    (`storage.local_path`) and this task's copy of the config names the
    copies; `self.urls` keeps the URLs for messages and results.json.
    Raises FileNotFoundError naming a URL with nothing there.
    """
    if self._localized:
      return
    remote = {k: self.config[k] for k in ("data_dir", "init_checkpoint",
                                          "vocab_file")
              if k in self.config and storage.is_remote(self.config[k])}
    if remote:
      config = copy.deepcopy(self.config)
      for key, url in remote.items():
        try:
          config[key] = storage.local_path(url)
        except FileNotFoundError as e:
          raise FileNotFoundError(f"config.{key}={url!r} does not exist "
                                  f"({e})") from e
        self.urls[key] = url.rstrip("/")
      if "data_dir" in remote:
        # Directories the task reads beside its data (MNLI: AX's
        # `diagnostic`) are cached beside its copy, where it looks.
        parent = remote["data_dir"].rstrip("/").rsplit("/", 1)[0]
        for name in self.sibling_inputs():
          if storage.exists(f"{parent}/{name}"):
            storage.local_path(f"{parent}/{name}")
      self.config = config
    self._localized = True

  def sibling_inputs(self) -> tuple[str, ...]:
    """Directories beside `data_dir` that the task also reads, if there."""
    return ()

  def to_urls(self, text: str) -> str:
    """`text` with the local copies' paths replaced by their URLs."""
    for key, url in self.urls.items():
      text = text.replace(self.config[key], url)
    return text

  def _naming_urls(self, check):
    return lambda ok, msg: check(ok, self.to_urls(msg))

  # -- the encoder ---------------------------------------------------------

  @property
  def encoder(self) -> finetune.Encoder:
    if self._encoder is None:
      self.localize_inputs()
      self._encoder = finetune.load_encoder(self.config)
    return self._encoder

  @property
  def vocab_file(self) -> str:
    return self.encoder.vocab_file

  def model_config(self):
    return self.encoder.config

  def pretrained_params(self):
    params = self.encoder.params
    return None if params is None else {"bert": params}

  @abc.abstractmethod
  def head_description(self) -> str:
    """E.g. 'classifier (3 outputs)': what starts freshly initialised."""

  @property
  def uses_bilstm(self) -> bool:
    """Whether a BiLSTM sits under the head (config.bilstm, Table 5)."""
    return bool(self.config.get("bilstm", False))

  @property
  def init_report(self) -> str:
    """Where the encoder came from, and what starts fresh (the head)."""
    std = self.encoder.config.initializer_range
    report = (f"{self.encoder.report}; {self.head_description()} freshly "
              f"initialised: truncated normal, stddev {std:g}")
    if self.uses_bilstm:
      c = self.config
      units = heads.lstm_width(self.encoder.config, c.lstm_units)
      report += (f"; BiLSTM ({c.lstm_layers} layer(s), {units} units "
                 "a direction) freshly initialised: flax's LSTM defaults")
    return self.to_urls(report)

  # -- data ----------------------------------------------------------------

  def prepare(self, workdir: str) -> None:
    del workdir
    try:
      self.localize_inputs()
      tok = tokenization.create_tokenizer(self.vocab_file,
                                          self.config.do_lower_case)
      finetune.check_vocab(self.encoder, tok)
      self.read_data(tok)
    except (ValueError, FileNotFoundError, KeyError) as e:
      # Bad files are bad input: one line naming them, before any step.
      raise base.ConfigError(self.to_urls(str(e).strip('"'))) from e
    if self.train is None or not self.train.num_features:
      raise base.ConfigError(
          f"{self.urls.get('data_dir', self.config.data_dir)}: the train "
          f"split of {self.name} has no examples")
    if jax.process_index() == 0:
      sizes = ", ".join(f"{s.name} {len(s.examples)}"
                        for s in [self.train, *self.evals, *self.tests])
      print(f"{self.name}: {sizes} examples; {self.init_report}",
            flush=True)

  @abc.abstractmethod
  def read_data(self, tokenizer) -> None:
    """Fills self.train, self.evals, self.tests (and self.skipped)."""

  def num_train_examples(self) -> int:
    """What TF1 divides by the batch size to count steps (its examples)."""
    return len(self.train.examples)

  def num_train_steps(self) -> int:
    return finetune.num_train_steps(self.num_train_examples(),
                                    self.config.train_batch_size,
                                    self.config.num_train_epochs)

  def num_warmup_steps(self) -> int:
    return int(self.num_train_steps() * self.config.warmup_proportion)

  def train_data(self, batch_sharding):
    c = self.config
    ds = finetune.FeatureBatches(
        self.train.features, global_batch_size=c.train_batch_size,
        seed=c.seed, train=True, num_epochs=c.num_train_epochs,
        pad_to_multiple_of=c.pad_to_multiple_of,
        length_bucketing_window=c.length_bucketing_window,
        num_steps=self.num_train_steps(), **self.batch_options(batch_sharding))
    self._batch_sharding = batch_sharding
    return base.TrainData(finetune.iterator(ds, batch_sharding),
                          lambda step: (c.train_batch_size,
                                        c.max_seq_length, 0))

  # Tasks whose examples can share rows (`finetune.FeatureBatches`'s
  # `pack`), and whose heads read every token (its `unpack`).
  can_pack = False
  token_level = False

  @property
  def packs(self) -> bool:
    """Examples packed into shared rows (`config.pack_sequences`; never
    under a BiLSTM, which reads whole rows)."""
    return (self.can_pack and bool(self.config.get("pack_sequences", False))
            and not self.uses_bilstm)

  def batch_options(self, batch_sharding) -> dict[str, Any]:
    """Extra `FeatureBatches` arguments: packing, for tasks that pack."""
    if not self.packs:
      return {}
    # Each host's rows must split evenly over its devices on the batch axis.
    axes = batch_sharding.spec[0] if batch_sharding.spec else None
    axes = () if axes is None else (
        axes if isinstance(axes, tuple) else (axes,))
    shards = int(np.prod([batch_sharding.mesh.shape[a] for a in axes]))
    local = max(shards // jax.process_count(), 1)
    return {"pack": True, "unpack": self.token_level,
            "row_multiple": local if local > 1 else 2}

  def packed_inputs(self, batch) -> dict[str, Any] | None:
    """What a head's `packed` argument takes from a packed batch (None for
    an unpacked one): the summary position of a causal (LTR) encoder is
    each sequence's last token, [CLS] otherwise."""
    if "pack_ids" not in batch:
      return None
    causal = self.model_config().attention == "causal"
    out = {"position_ids": batch["position_ids"],
           "pack_ids": batch["pack_ids"],
           "pool_at": batch["last_at" if causal else "cls_at"]}
    if "unpack_at" in batch:
      out["unpack_at"] = batch["unpack_at"]
    return out

  @staticmethod
  def example_mask(batch):
    """[B, L]: each example's own tokens, packed or not."""
    return batch.get("example_mask", batch["input_mask"])

  def packed_spec(self, batch_size: int, seq_len: int, sequences: int = 1
                  ) -> dict[str, tuple[tuple[int, ...], Any]]:
    """`batch_spec`'s arrays of a packed batch at its largest (every
    sequence a row of its own): the rows, the summary positions, and for
    token-level tasks the gather map and each example's mask."""
    rows = batch_size * sequences
    spec = {k: ((rows, seq_len), jnp.int32)
            for k in ("input_ids", "input_mask", "segment_ids",
                      "position_ids", "pack_ids")}
    at = (batch_size, sequences) if sequences > 1 else (batch_size,)
    spec.update({k: (at, jnp.int32) for k in ("cls_at", "last_at")})
    if self.token_level:
      spec.update({k: ((batch_size, seq_len), jnp.int32)
                   for k in ("unpack_at", "example_mask")})
    return spec

  def split_outputs(self, run_eval, split: Split,
                    keys: Sequence[str] = ("logits",)
                    ) -> dict[str, np.ndarray]:
    """The eval step's `keys` for every feature of `split`, in order."""
    c = self.config
    ds = finetune.FeatureBatches(
        split.features, global_batch_size=c.eval_batch_size, seed=c.seed,
        train=False, pad_to_multiple_of=c.pad_to_multiple_of,
        **self.batch_options(self._batch_sharding))
    it = finetune.iterator(ds, self._batch_sharding)
    try:
      outputs = run_eval(iter(it))
    finally:
      it.close()
    return {k: finetune.gather_predictions(outputs, split.num_features, k)
            for k in keys}

  # -- training metrics ----------------------------------------------------

  def summarize_train(self, sums):
    n = max(sums["example_count"], 1e-9)
    out = {"loss": sums["loss_sum"] / n}
    if "accuracy_correct" in sums:
      out["accuracy"] = sums["accuracy_correct"] / max(
          sums.get("accuracy_weight", n), 1e-9)
    return out

  # -- the end -------------------------------------------------------------

  def write_outputs(self, params, workdir: str, run_eval
                    ) -> dict[str, Any]:
    """Prediction files and exports; what results.json gets for them."""
    del params, workdir, run_eval
    return {}

  def finish(self, params, workdir, run_eval):
    out: dict[str, Any] = {
        "init_checkpoint": self.urls.get("init_checkpoint",
                                         self.config.init_checkpoint),
        "init": self.init_report}
    if self.skipped:
      out["skipped"] = self.skipped
    out.update(self.write_outputs(params, workdir, run_eval))
    return out

  def export_hf(self, params, workdir: str, export_fn, **kwargs
                ) -> dict[str, Any]:
    """The fine-tuned model for transformers (`export_fn`, one of
    pretrained's export_hf_*), or why there is none: a BiLSTM head, or a
    causal encoder (transformers' BERT heads attend both ways and pool
    position 0), has no transformers architecture."""
    if not self.config.export:
      return {}
    why = ("BiLSTM head" if self.uses_bilstm else
           "causal (LTR) encoder" if self.model_config().attention == "causal"
           else None)
    if why:
      return {"export_skipped": f"{why}: no transformers architecture "
                                "computes it; the Orbax checkpoint in the "
                                "workdir is the model"}
    params = self.host_params(params)
    if params is None:
      return {}
    return {"checkpoints": {"hf": export_fn(
        self.model_config().replace(dtype="float32"), params,
        self.vocab_file, os.path.join(workdir, "export", "hf"), **kwargs)}}

  @staticmethod
  def host_params(params) -> Mapping[str, Any] | None:
    """The whole parameter tree as numpy on process 0 (None elsewhere)."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    from bert_jax import pretrained  # pylint: disable=g-import-not-at-top
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
      return None
    return pretrained.jax_to_numpy(params)

  def results_header(self):
    return {"task": self.name}
