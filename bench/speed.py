#!/usr/bin/env python
"""Thin wrapper: `python bench/speed.py ARGS` == `label-audit bench speed ARGS`."""
import sys

from label_audit.benchmarks.speed import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
