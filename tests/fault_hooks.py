"""`python -m tests.fault_hooks ARGS`: bert_jax.main with a fault armed.

BERT_JAX_PAUSE_BEFORE_COMMIT=STEP: the asynchronous save of checkpoint
STEP writes everything, then, just before Orbax renames its temporary
directory to the step's name (its commit), writes the temporary path to
the file $BERT_JAX_PAUSE_MARKER and sleeps. A kill -9 sent once the marker
exists lands inside the write, every time.
"""

import asyncio
import os

from absl import app
from orbax.checkpoint._src.path import atomicity

from bert_jax import cli
from bert_jax import main


def _arm() -> None:
  step = os.environ.get("BERT_JAX_PAUSE_BEFORE_COMMIT")
  if not step:
    return
  marker = os.environ["BERT_JAX_PAUSE_MARKER"]
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def paused(self):
    if self.get_final().name == step:
      with open(marker + ".tmp", "w") as f:
        f.write(str(self.get()))
      os.replace(marker + ".tmp", marker)
      await asyncio.sleep(3600)
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = paused


if __name__ == "__main__":
  _arm()
  app.run(main.main, flags_parser=cli.parse_flags)
