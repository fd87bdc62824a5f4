"""``python -m mcp_troupe.actors``: the troupe command line."""

import sys

from mcp_troupe.actors.cli.main import main

sys.exit(main())
