"""`python -m services.cli`: the `taskqueue` command."""

import sys

from services.cli.main import main

sys.exit(main())
