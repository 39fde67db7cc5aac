"""The command-line toolkit: one parser (parser.py), one way to fail (errors.py)."""
