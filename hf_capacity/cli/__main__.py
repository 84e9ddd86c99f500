"""`python -m hf_capacity.cli`: the same as the `hf-capacity` command."""

import sys

from . import main

sys.exit(main())
