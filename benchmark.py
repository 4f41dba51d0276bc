#!/usr/bin/env python
"""rfbench command line: `python benchmark.py --help`. All logic lives in rfbench.cli."""

import sys

from rfbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
