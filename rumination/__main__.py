"""`python -m rumination`."""

import sys

from rumination.cli import main

sys.exit(main())
