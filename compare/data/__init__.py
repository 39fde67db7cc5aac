"""The data both implementations see: the corpus, its vocabulary and batches, and the checks on --data."""
