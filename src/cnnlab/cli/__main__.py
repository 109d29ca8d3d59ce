"""``python -m cnnlab.cli``: the same as the ``cnnlab`` command."""

import sys

from . import main

sys.exit(main())
