"""compare.train's machinery: settings, the loop, saving and restoring, logging, data parallelism."""
