"""``python -m l2fast <command>``: the same as the ``l2fast`` command."""

import sys

from l2fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
