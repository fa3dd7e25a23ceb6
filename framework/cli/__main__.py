"""``python -m framework.cli``: the ``archlab`` command without its console script."""
import sys

from . import main

sys.exit(main())
