#!/usr/bin/env python
"""Incremental re-scoring benchmark: `python bench/incremental.py [--sizes 30000x128x20] [--json]`.

Thin wrapper; see label_audit/benchmarks/incremental.py.
"""
import sys

from label_audit.benchmarks.incremental import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
