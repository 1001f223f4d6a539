import sys

from pssync.cli.main import main

sys.exit(main())
