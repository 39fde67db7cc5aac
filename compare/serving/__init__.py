"""compare.demo's HTTP server and its page."""
