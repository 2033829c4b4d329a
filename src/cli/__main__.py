"""``python -m src.cli``: run the command line and exit with its code."""

import sys

from src.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
