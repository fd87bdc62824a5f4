"""``python -m actors``: the troupe command line."""

import sys

from actors.cli import main

sys.exit(main())
