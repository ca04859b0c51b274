"""What the command lines share (no flags are defined here)."""

import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with a bad `--config.KEY=VALUE` reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except (KeyError, AttributeError) as e:
    # ml_collections' word for a key the locked config does not have.
    sys.exit(f"error: unknown config key {str(e).strip(chr(34))} in a "
             "--config.KEY=VALUE override")
  except (TypeError, ValueError) as e:
    sys.exit(f"error: bad --config override: {e}")
