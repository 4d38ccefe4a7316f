"""Embeddings throughput benchmark: `python bench/embeddings.py [--images N] [--json]`.

Same as `label-audit bench embeddings`; see label_audit/benchmarks/embeddings.py.
"""

import sys

from label_audit.benchmarks.embeddings import main

if __name__ == "__main__":
    sys.exit(main())
