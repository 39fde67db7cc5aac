"""``python -m compare.bench_distributed``: the same as ``python -m compare.bench --distributed``."""

import sys

from compare.benchmarks.distributed import main

if __name__ == "__main__":
    sys.exit(main())
