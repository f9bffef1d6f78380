"""`python -m joulebench` is the `joulebench` command."""

import sys

from joulebench.cli import main

sys.exit(main())
