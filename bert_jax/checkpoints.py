"""Training checkpoints: one Orbax CheckpointManager per run.

Each checkpoint holds the train state (sharded arrays), the input
iterator's state, the config (JSON) and the run's identity (JSON: what a
checkpoint must share with a run that resumes from it; see
`bert_jax.train.run_identity`). Saves are asynchronous; the newest `keep`
are kept. Orbax writes each checkpoint under a temporary name and renames
it at the end, so an interrupted save never looks complete.

Restoring never silently loses work. Walking back from the newest step:
- a checkpoint of another run (its identity differs: model shape,
  vocabulary, objective, batch layout) is an `IncompatibleCheckpointError`
  naming the differing keys; nothing is skipped or deleted;
- a transient read error (EIO, a timeout, a dropped connection: what a
  network file system does) is retried with exponential backoff, then is a
  `CheckpointReadError` naming the path;
- a checkpoint that cannot be read (corrupt, truncated, half-deleted) is
  skipped, with a warning naming its step and the step the run resumes
  from.

Preemption: `PreemptionWatcher` turns SIGTERM (what a TPU VM receives before
it is taken away) into a flag the training loop polls between steps, and
also asks Orbax whether the JAX coordination service saw a preemption.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orbax.checkpoint as ocp
from absl import logging

from bert_jax import storage

T = TypeVar("T")

# OS errors worth a retry: a network file system that is slow or briefly
# gone. Anything else (a missing file, garbage) is not going to get better.
TRANSIENT_ERRNOS = frozenset({
    errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ESTALE,
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EBUSY})
# The same, as TensorStore (which reads the arrays) words them: absl status
# codes and the OS's own messages inside its ValueError.
_TRANSIENT_TEXT = ("UNAVAILABLE:", "DEADLINE_EXCEEDED:", "Input/output error",
                   "timed out", "Connection reset", "Stale file handle")


class IncompatibleCheckpointError(ValueError):
  """The checkpoint was written by a run of another config."""


class CheckpointIOError(OSError):
  """A checkpoint could not be read or written; the message says which."""


class CheckpointReadError(CheckpointIOError):
  """Reading a checkpoint kept failing with a transient I/O error."""


class CheckpointWriteError(CheckpointIOError):
  """Writing a checkpoint failed (e.g. the disk is full)."""


def is_transient(e: BaseException) -> bool:
  """Whether `e` (or what caused it) is an I/O error worth retrying."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, (ConnectionError, TimeoutError)):
      return True
    if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
      return True
    if any(t in str(e) for t in _TRANSIENT_TEXT):
      return True
    e = e.__cause__ or e.__context__
  return False


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def identity_diff(saved: Mapping[str, Any], run: Mapping[str, Any]
                  ) -> list[str]:
  """'key: checkpoint X, run Y' for every key where two identities differ."""
  a, b = _flatten(saved), _flatten(run)
  # JSON turns tuples into lists: compare what JSON would store.
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  keys = sorted(set(a) | set(b), key=lambda k: (k.startswith("params."), k))
  return [f"{k}: checkpoint {a.get(k, '(absent)')}, run "
          f"{b.get(k, '(absent)')}" for k in keys
          if norm(a.get(k)) != norm(b.get(k))]


def _short(e: BaseException) -> str:
  """One line; a long message keeps its end, where the OS's reason is."""
  text = " ".join(str(e).split())
  if len(text) > 400:
    text = text[:200] + " ... " + text[-200:]
  return f"{type(e).__name__}: {text}"


# A checkpoint's Orbax items besides the train state ("state"): JSON (the
# data iterator's state, the config, the run's identity).
JSON_ITEMS = ("data", "config", "identity")


class Checkpointer:
  """Saves and restores (train state, data-iterator state, config, identity).

  `retries` and `backoff_s`: a transient read error is retried `retries`
  times, after backoff_s, 2 backoff_s, 4 backoff_s ... seconds.
  """

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
               retries: int = 5, backoff_s: float = 1.0):
    self.directory = storage.abspath(directory)  # a path or gs:// URL
    self.retries = retries
    self.backoff_s = backoff_s
    self._saving = -1  # the step of the newest save started
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save),
        item_names=("state", *JSON_ITEMS))

  def save(self, step: int, state: Any, data_state: dict[str, Any],
           config: dict[str, Any], force: bool = False,
           identity: dict[str, Any] | None = None) -> bool:
    """Starts an asynchronous save; a failed write raises CheckpointWriteError
    here (the previous save's) or from `wait`."""
    items = dict(state=ocp.args.StandardSave(state),
                 data=ocp.args.JsonSave(data_state),
                 config=ocp.args.JsonSave(config))
    if identity is not None:
      items["identity"] = ocp.args.JsonSave(identity)
    self.wait()  # the previous save's failure is that save's, not this one's
    self._saving = step
    try:
      return self.manager.save(step, args=ocp.args.Composite(**items),
                               force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from e

  def _write_error(self, step: int, e: BaseException) -> CheckpointWriteError:
    good = self.all_steps()
    return CheckpointWriteError(
        f"saving the checkpoint at step {step} in {self.directory} failed "
        f"({_short(e)}); "
        + (f"the checkpoint at step {good[-1]} is intact"
           if good else "there is no earlier checkpoint"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _read(self, step: int, what: str, fn: Callable[[], T]) -> T:
    """fn(), retried with backoff while it fails with a transient error."""
    for attempt in range(self.retries + 1):
      try:
        return fn()
      except Exception as e:  # pylint: disable=broad-except
        if not is_transient(e):
          raise
        path = os.path.join(self.directory, str(step))
        if attempt == self.retries:
          raise CheckpointReadError(
              f"reading the {what} of the checkpoint {path} failed "
              f"{attempt + 1} times ({_short(e)}); the file system may be "
              "down: rerun when it is back (nothing was skipped)") from e
        delay = self.backoff_s * 2 ** attempt
        logging.warning("reading the %s of %s: %s; retry %d of %d in %.1f s",
                        what, path, _short(e), attempt + 1, self.retries,
                        delay)
        time.sleep(delay)
    raise AssertionError("unreachable")

  def identity(self, step: int) -> dict[str, Any] | None:
    """The identity saved with a checkpoint (None: one saved without)."""
    if not storage.exists(os.path.join(self.directory, str(step),
                                       "identity")):
      return None
    return self._read(step, "identity", lambda: self.manager.restore(
        step, args=ocp.args.Composite(identity=ocp.args.JsonRestore())
    )["identity"])

  def check_identity(self, step: int, identity: Mapping[str, Any]) -> None:
    """Raises IncompatibleCheckpointError when another run wrote `step`."""
    saved = self.identity(step)
    if saved is None:
      logging.warning("checkpoint at step %d in %s records no run identity "
                      "(written before bert_jax saved one): not checked",
                      step, self.directory)
      return
    diff = identity_diff(saved, identity)
    if diff:
      raise IncompatibleCheckpointError(
          f"the checkpoint at step {step} in {self.directory} was written "
          f"by a run of another config ({len(diff)} differences: "
          + "; ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
          + "): use another --workdir, or the config that wrote it")

  def check_latest(self, identity: Mapping[str, Any]) -> int | None:
    """Before the first step: the newest checkpoint whose identity can be
    read fits the run (else IncompatibleCheckpointError); its step."""
    for step in reversed(self.all_steps()):
      try:
        self.check_identity(step, identity)
      except (IncompatibleCheckpointError, CheckpointReadError):
        raise
      except Exception:  # pylint: disable=broad-except
        continue  # unreadable: restore_latest says so and walks back
      return step
    return None

  def restore_latest(self, abstract_state: Any,
                     identity: Mapping[str, Any] | None = None
                     ) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data_state) of the newest readable checkpoint."""
    unreadable: list[tuple[int, BaseException]] = []

    def warn(resumed_from: str) -> None:
      for step, e in unreadable:
        logging.warning("checkpoint at step %d in %s is unreadable (%s); %s",
                        step, self.directory, _short(e), resumed_from)

    for step in reversed(self.all_steps()):
      try:
        if identity is not None:
          self.check_identity(step, identity)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore())
        restored = self._read(step, "state", lambda s=step, a=args:
                              self.manager.restore(s, args=a))
      except (IncompatibleCheckpointError, CheckpointReadError):
        raise
      except Exception as e:  # pylint: disable=broad-except
        unreadable.append((step, e))
        continue
      warn(f"resuming from step {step}")
      return step, restored["state"], restored["data"]
    warn("starting from step 0")
    return None

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(self._saving, e) from e

  def close(self) -> None:
    self.wait()
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
