"""The shared model: one initializer, both implementations behind one engine interface, sampling, checkpoints."""
