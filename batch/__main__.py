"""``python -m batch`` is ``python -m batch.score``."""

import sys

from batch.score import main

sys.exit(main())
