import sys

from codecache.cli.main import main

# The guard keeps a spawned process (loadgen --processes) that re-imports this module as
# __mp_main__ from running the command line again.
if __name__ == "__main__":
    sys.exit(main())
