"""Restorers: IR-SDE family, DriftRec, feed-forward (spandrel), DiffLoss, networks."""
