"""Exceptions with messages that say what was wrong and what to do."""

from __future__ import annotations


class GenDegError(Exception):
    """Base class of every error the pack raises on purpose (bad input, bad file, ...)."""


class InputError(GenDegError, ValueError):
    """An input has the wrong shape, dtype, range or value."""


class WeightsError(GenDegError):
    """A checkpoint is missing, corrupt, of the wrong family, or fails verification."""


class MissingWeightError(WeightsError, FileNotFoundError):
    """A checkpoint is not on disk; the message names the file, its folder and the fetch command."""


class UnsafeCheckpointError(WeightsError):
    """A pickled checkpoint needs globals outside the allow-list and was refused."""


class HashMismatchError(WeightsError):
    """A file's sha256 differs from the manifest."""


class UnsafePathError(GenDegError, ValueError):
    """A path escapes the folder it must stay in."""


class Interrupted(GenDegError):
    """The user (or the runner) asked to stop; raised between steps."""
