"""Errors that mean "the user gave something wrong": the CLI prints them as one sentence, exit code 1."""
from __future__ import annotations

__all__ = ["PdlError", "DataError"]


class PdlError(Exception):
    """A user error with a message that names the file or setting and the problem."""


class DataError(PdlError, ValueError):
    """A dataset, image or prediction file is missing or malformed."""
