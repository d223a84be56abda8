"""``python -m ccdask ...``: the ``ccdask`` command."""

import sys

from .cli import main

sys.exit(main())
