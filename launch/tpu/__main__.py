"""`python -m launch.tpu SUBCOMMAND ...`: see launch/tpu/cli.py."""

import sys

from launch.tpu import cli

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:]))
