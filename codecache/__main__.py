import sys

from codecache.cli import main

sys.exit(main())
