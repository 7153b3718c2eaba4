"""`python -m ssdkit.cli ...`: the `ssdkit` command."""

import sys

from ssdkit.cli import main

sys.exit(main())
