"""What the training loop asks of a task.

`bert_jax.train` knows nothing about masked LM, GLUE or SQuAD: it builds the
mesh, the optimizer and the sharded state, runs the jitted step, logs,
checkpoints, evaluates and writes results.json. A `Task` supplies the rest:

- the model: `model_config()` (a `BertConfig`), `build_model(cfg, rngs)`
  (the whole nnx module, encoder + head), `pretrained_params()` (weights
  to start from, e.g. an encoder read from `init_checkpoint`, or None) and
  `frozen_params()` (sub-trees the optimizer must leave alone);
- the objective: `loss(model, batch, rng, denominators)` -> (loss, metric
  sums) and `denominators(batch)` (the whole batch's normalisers, so that
  micro-batch losses add up to the batch loss under gradient accumulation);
- the data: `train_data(batch_sharding)` (an iterator with get/set_state,
  plus the batch size and sequence length of each step), `batch_spec` (the
  shapes of a batch, for compiling without data), `num_train_steps()`;
- evaluation: `eval_outputs(model, batch)` (what the jitted eval step
  returns, replicated on every host) and `evaluate(run_eval, step)`, which
  feeds its own eval iterators through `run_eval` and turns the outputs into
  metrics;
- the end: `finish(params, workdir, run_eval)` writes predictions / exports and
  returns what goes into results.json beside the metrics.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from bert_jax import model as model_lib

Array = jax.Array
Batch = dict[str, Array]
# run_eval(iterator) -> the eval step's outputs for each batch, on the host.
RunEval = Callable[[Iterator[Batch]], list[dict[str, np.ndarray]]]


class ConfigError(ValueError):
  """A config value or input that cannot work; the message names it."""


@dataclasses.dataclass
class TrainData:
  """The training stream and what each step of it looks like."""
  iterator: Any  # __next__, get_state, set_state, close
  # step -> (global batch size, sequence length, masked positions or 0)
  shape_at: Callable[[int], tuple[int, int, int]]


class Task(abc.ABC):
  """One problem for the one training loop."""

  # The train metric shown in the progress line (a key of summarize_train).
  progress_metric: str = ""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  # -- the model ---------------------------------------------------------

  @abc.abstractmethod
  def model_config(self) -> model_lib.BertConfig:
    """The encoder's architecture and numerics."""

  @abc.abstractmethod
  def build_model(self, cfg: model_lib.BertConfig,
                  rngs: nnx.Rngs) -> nnx.Module:
    """The whole model (encoder + head), freshly initialised."""

  def pretrained_params(self) -> Mapping[str, Any] | None:
    """Sub-trees of the model's params to start from, or None."""
    return None

  def frozen_params(self) -> tuple[str, ...]:
    """Top-level sub-trees of the model's params never updated (e.g. a
    feature-based task's encoder): the optimizer leaves them bitwise."""
    return ()

  # -- the objective -----------------------------------------------------

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: Batch, rng: Array | None,
           denominators: tuple[Array, ...] | None = None
           ) -> tuple[Array, dict[str, Array]]:
    """The scalar loss and metric sums (summed over the batch)."""

  def denominators(self, batch: Batch) -> tuple[Array, ...]:
    """The whole batch's loss normalisers (default: its number of rows)."""
    return (np.float32(next(iter(batch.values())).shape[0]),)

  @abc.abstractmethod
  def summarize_train(self, sums: Mapping[str, float]) -> dict[str, float]:
    """Train metrics from the metric sums of a log period."""

  # -- data --------------------------------------------------------------

  @abc.abstractmethod
  def batch_spec(self, batch_size: int, seq_len: int
                 ) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Shapes and dtypes of one global training batch."""

  @abc.abstractmethod
  def num_train_steps(self) -> int:
    ...

  def num_warmup_steps(self) -> int:
    return self.config.num_warmup_steps

  @abc.abstractmethod
  def train_data(self, batch_sharding: jax.sharding.Sharding) -> TrainData:
    ...

  # -- evaluation and the end -------------------------------------------

  @abc.abstractmethod
  def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
    ...

  @abc.abstractmethod
  def evaluate(self, run_eval: RunEval, step: int) -> dict[str, float]:
    ...

  def finish(self, params: Any, workdir: str, run_eval: RunEval
             ) -> dict[str, Any]:
    """Predictions, exports: what results.json gets beside the metrics."""
    del params, workdir, run_eval
    return {}

  def results_header(self) -> dict[str, Any]:
    """What identifies the run at the top of results.json."""
    return {}

  def prepare(self, workdir: str) -> None:
    """Work before the mesh and state exist (e.g. making data)."""
    del workdir

  def validate(self, check: Callable[[bool, str], None]) -> None:
    """Task-specific config checks; `check(ok, message)` raises."""
    del check
