"""What the command lines share (no flags are defined here).

Every command line runs through `run(main)`: absl flag parsing, a bad
`--config.KEY=VALUE` in one line, and a console that shows the program's
own progress, results and warnings and nothing else:

- On a machine with no TPU chip and no GPU, JAX is kept to its CPU backend
  (`JAX_PLATFORMS=cpu`), so an installed libtpu (a dev requirement, for
  `bert_jax.plan`) does not try to start a TPU and print its failure. A TPU
  VM, a GPU machine, and an explicit `JAX_PLATFORMS` are left alone.
- Unless `--verbosity` is given, libraries' Python logs below ERROR
  (jax, orbax's INFO lines, transformers) and their C++ start-up logs
  (`TF_CPP_MIN_LOG_LEVEL=2`) are held back; bert_jax's own warnings (a
  damaged input, an unreadable checkpoint) still show. `--verbosity=0`
  (INFO) or `--verbosity=1` (DEBUG) brings the libraries' logs back.

Library modules never do any of this on import: only command lines do.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import sys
from collections.abc import Callable, Sequence

from absl import app
from absl import flags
from absl import logging


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with a bad `--config.KEY=VALUE` reported in one line."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except (KeyError, AttributeError) as e:
    # ml_collections' word for a key the locked config does not have.
    sys.exit(f"error: unknown config key {str(e).strip(chr(34))} in a "
             "--config.KEY=VALUE override")
  except (TypeError, ValueError) as e:
    sys.exit(f"error: bad --config override: {e}")
  quiet_console(verbose=flags.FLAGS["verbosity"].present)
  return rest


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)` with this module's flag parsing and console."""
  app.run(main, flags_parser=parse_flags)


def quiet_console(verbose: bool = False) -> None:
  """The console settings of the module docstring (before JAX starts)."""
  choose_jax_platform()
  if verbose:
    return
  # C++ INFO and WARNING lines of XLA (and TensorFlow, where a command
  # needs it): read when their logging starts, after this.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  # absl's logger carries bert_jax's warnings (and orbax's INFO lines);
  # every other library logs through the root logger.
  logging.set_verbosity(logging.WARNING)
  # set_verbosity leaves absl's logger at NOTSET (it then inherits the
  # root's level): give it its own, or the ERROR below hides its warnings.
  logging.get_absl_logger().setLevel(std_logging.WARNING)
  std_logging.getLogger().setLevel(std_logging.ERROR)


def choose_jax_platform() -> str | None:
  """Sets JAX_PLATFORMS=cpu on a machine with no TPU and no GPU.

  JAX tries every installed backend; with libtpu installed and no TPU
  chip, libtpu prints a page of initialisation errors before falling back
  to the CPU. JAX's own hardware probe (PCI ids of TPU chips, GPU device
  nodes) decides; an explicit JAX_PLATFORMS or JAX_FORCE_TPU_INIT, or a
  machine with either accelerator, is left alone. Returns what was set.
  """
  if "JAX_PLATFORMS" in os.environ or "JAX_FORCE_TPU_INIT" in os.environ:
    return None
  if (importlib.util.find_spec("libtpu") is None
      and not os.environ.get("TPU_LIBRARY_PATH")):
    return None  # no libtpu: JAX starts quietly on its own
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    tpu_chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
    gpu = hardware_utils.has_visible_nvidia_gpu() or bool(
        getattr(hardware_utils, "num_available_amd_gpus",
                lambda **_: 0)(stop_at=1))
  except (ImportError, AttributeError, OSError):
    return None  # another JAX: let it choose
  if tpu_chips or gpu:
    return None
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # read at import: tell the config as well
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_platforms", "cpu")
  return "cpu"
