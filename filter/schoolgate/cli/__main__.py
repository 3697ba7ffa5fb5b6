"""`python -m schoolgate.cli`."""

import sys

from schoolgate.cli.app import main

sys.exit(main())
