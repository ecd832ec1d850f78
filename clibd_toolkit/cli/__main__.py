"""``python -m clibd_toolkit.cli``: the ``clibd`` command."""
import sys

from . import main

sys.exit(main())
