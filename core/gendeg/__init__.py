"""GenDeg: conditioning, sampling pipeline, checkpoint conversion."""
