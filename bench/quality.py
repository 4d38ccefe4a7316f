#!/usr/bin/env python
"""Thin wrapper: `python bench/quality.py ARGS` == `label-audit bench quality ARGS`."""
import sys

from label_audit.benchmarks.quality import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
