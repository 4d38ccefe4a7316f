"""Score-writing benchmark: `python bench/writes.py [--n 100000] [--json]`.

Same as `label-audit bench writes`; see label_audit/benchmarks/writes.py.
"""

import sys

from label_audit.benchmarks.writes import main

if __name__ == "__main__":
    sys.exit(main())
