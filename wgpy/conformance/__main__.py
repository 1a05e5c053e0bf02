"""``python -m wgpy.conformance``: the same as ``wgpy conformance``."""

import sys

from wgpy.conformance import main

sys.exit(main())
