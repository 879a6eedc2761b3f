"""Quality: full-reference and no-reference metrics, the quality perceiver."""
