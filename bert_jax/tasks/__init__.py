"""Tasks: what the one training loop (`bert_jax.train`) is asked to learn.

Each module holds one problem: its model, batches, loss, metrics and data
(`base.Task` says what a task supplies). `from_config(config)` picks the
task a config names: `config.task`, absent in pre-training configs.
"""

from __future__ import annotations

import ml_collections


def from_config(config: ml_collections.ConfigDict):
  """The Task for a job config (imported lazily: no work at import)."""
  name = config.get("task", "pretraining")
  if name == "pretraining":
    from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
    return pretraining.PretrainingTask(config)
  from bert_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  if name in classification.TASK_NAMES:
    return classification.ClassificationTask(config)
  from bert_jax.tasks import squad  # pylint: disable=g-import-not-at-top
  if name in squad.TASK_NAMES:
    return squad.SquadTask(config)
  if name == "swag":
    from bert_jax.tasks import swag  # pylint: disable=g-import-not-at-top
    return swag.SwagTask(config)
  from bert_jax.tasks import ner  # pylint: disable=g-import-not-at-top
  if name in ner.TASK_NAMES:
    return ner.NerTask(config)
  raise ValueError(f"config.task={name!r} is not a known task; known: "
                   f"pretraining, {', '.join(classification.TASK_NAMES)}, "
                   f"{', '.join(squad.TASK_NAMES)}, swag, "
                   f"{', '.join(ner.TASK_NAMES)}")
