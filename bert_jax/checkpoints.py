"""Training checkpoints: one Orbax CheckpointManager per run.

Each checkpoint holds the train state (sharded arrays), the input
iterator's state and the config (JSON). Saves are asynchronous; the newest
`keep` are kept. Restoring walks back from the newest step: a checkpoint
that cannot be read (corrupted, half-deleted) is skipped with a warning.
Orbax writes each checkpoint under a temporary name and commits it at the
end, so an interrupted save never looks complete.

Preemption: `PreemptionWatcher` turns SIGTERM (what a TPU VM receives before
it is taken away) into a flag the training loop polls between steps, and
also asks Orbax whether the JAX coordination service saw a preemption.
"""

from __future__ import annotations

import signal
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from bert_jax import storage


class Checkpointer:
  """Saves and restores (train state, data-iterator state, config)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = storage.abspath(directory)  # a path or gs:// URL
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save),
        item_names=("state", "data", "config"))

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           config: dict[str, Any], force: bool = False) -> bool:
    return self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config)),
        force=force)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state: Any
                     ) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data_state) of the newest readable checkpoint."""
    for step in reversed(self.all_steps()):
      try:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); "
                        "trying the one before", step, self.directory,
                        type(e).__name__, str(e)[:300])
        continue
      return step, restored["state"], restored["data"]
    return None

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionWatcher:
  """Sets `.requested` on SIGTERM; restores the old handler on close."""

  def __init__(self):
    self.requested = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: nothing to install
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
