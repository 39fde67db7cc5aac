"""compare.gradcheck's machinery: the gradient oracles and the report they make."""
