"""``python -m devserve``: what IDE run configurations call."""

import sys

from devserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
