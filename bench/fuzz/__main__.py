"""`python -m bench.fuzz`."""

import sys

from bench.fuzz import main

sys.exit(main())
