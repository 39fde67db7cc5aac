"""compare.plot's machinery: reading TensorBoard events, drawing the figure."""
