#!/usr/bin/env python
"""Thin wrapper: `python bench/detection.py ARGS` == `label-audit bench detection ARGS`."""
import sys

from label_audit.benchmarks.detection import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
