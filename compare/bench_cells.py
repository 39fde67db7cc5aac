"""``python -m compare.bench_cells``: the same as ``python -m compare.bench --cells``."""

import sys

from compare.benchmarks.cells import main

if __name__ == "__main__":
    sys.exit(main())
