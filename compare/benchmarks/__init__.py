"""compare.bench's machinery: timing, FLOP counts, the naive baseline, reports, sub-benchmarks."""
