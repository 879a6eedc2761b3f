"""Procedural degradations, one module per degradation, and intensity calibration."""
