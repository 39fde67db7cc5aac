"""What a user runs: one shared initializer, batching, training CLI, reports."""
