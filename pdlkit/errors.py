"""Errors that mean "the user gave something wrong": the CLI prints them as one sentence, exit code 1."""
from __future__ import annotations

__all__ = ["PdlError", "DataError"]


class PdlError(Exception):
    """A user error with a message that names the file or setting and the problem.

    ``parameter``: the library parameter(s) the message is about (``"batch_size"``, or a tuple),
    named in the message as in the library; a front end may say them in its own terms (``pdl`` says
    ``--batch-size``).
    """

    def __init__(self, message: str = "", *, parameter: str | tuple | None = None):
        super().__init__(message)
        self.parameters = (parameter,) if isinstance(parameter, str) else tuple(parameter or ())

    def in_terms_of(self, names: dict) -> str:
        """The message with each parameter called by ``names[parameter]`` where given."""
        message = str(self)
        for parameter in self.parameters:
            if parameter in names:
                message = message.replace(parameter, names[parameter], 1)
        return message


class DataError(PdlError, ValueError):
    """A dataset, image or prediction file is missing or malformed."""
