"""Typed errors raised at l2fast's boundaries.

Every error names the offending field and value, and the object that raised it keeps
exactly the state it had before the bad input.
"""

from __future__ import annotations


class L2FastError(Exception):
    """Base class of every error l2fast raises on purpose."""


class InvalidInputError(L2FastError, ValueError):
    """A value passed to an indicator or kernel is unusable (non-finite, wrong shape)."""


class InvalidBarError(InvalidInputError):
    """A market bar failed validation.

    Attributes:
        field: Name of the offending bar field (``"ts"``, ``"open"``, ``"high"``, ...).
        value: The offending value.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid bar: {field}={value!r}: {reason}")


class ConfigError(L2FastError, ValueError):
    """A configuration key is unknown or its value is out of range."""
