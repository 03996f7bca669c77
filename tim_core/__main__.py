"""`python -m tim_core` is the `tim` command."""

import sys

from .cli import main

sys.exit(main())
