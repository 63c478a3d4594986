"""``python -m csigen``: see :mod:`csigen.cli`."""

import sys

from csigen.cli import main

if __name__ == "__main__":
    sys.exit(main())
