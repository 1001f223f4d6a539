"""`python -m bench.chaos`: see `bench.chaos.cli`."""

from bench.chaos.cli import main

raise SystemExit(main())
