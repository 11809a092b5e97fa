"""The one shape of an error a user or a client may see: a stable ``code`` and a ``message`` saying what to do."""

from __future__ import annotations

__all__ = ["CodedError"]


class CodedError(Exception):
    """An error with a stable machine-readable ``code`` and a human ``message``, safe to show (``public``)."""

    public = True

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
