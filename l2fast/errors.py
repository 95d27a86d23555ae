"""Typed errors raised at l2fast's boundaries.

Every error names the offending field and value, and the object that raised it keeps
exactly the state it had before the bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _rebuild(cls: type[L2FastError], args: tuple[Any, ...], state: dict[str, Any]) -> L2FastError:
    """Unpickle an l2fast error without calling its ``__init__`` (see ``__reduce__``)."""
    err = cls.__new__(cls, *args)
    err.__dict__.update(state)
    return err


class L2FastError(Exception):
    """Base class of every error l2fast raises on purpose.

    Every subclass pickles and copies with its message and attributes (a worker process
    can send one back to its parent), whatever its ``__init__`` takes.
    """

    def __reduce__(self) -> tuple[Callable[..., L2FastError], tuple[Any, ...]]:
        # An exception pickles as cls(*self.args), and self.args holds only the message,
        # which a custom __init__ (reason, path), (field, value, reason)... would take for
        # another argument, or refuse. Rebuild without __init__: the message as args, then
        # the attributes (path, reason, ...) from __dict__.
        return _rebuild, (type(self), self.args, self.__dict__)


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


class InvalidDecisionError(InvalidInputError):
    """A strategic decision from L3 is malformed (unknown regime, exposure out of range...)."""


class ConfigError(L2FastError, ValueError):
    """A configuration key is unknown or its value is out of range."""


class ModelLoadError(L2FastError, ValueError):
    """A model file (ONNX + manifest) is missing, corrupt, tampered with or unusable.

    Attributes:
        path: The offending file or folder (None when no single file is at fault).
        reason: What is wrong with it.
    """

    def __init__(self, reason: str, path: object = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class ExportError(L2FastError, ValueError):
    """A model could not be exported: unsupported policy, bad source, failed parity check."""


class UnsafePickleError(ExportError):
    """A pickle names a global outside the export step's allow-list; it was not loaded.

    Attributes:
        module: Module of the refused global.
        name: Qualified name of the refused global.
    """

    def __init__(self, module: str, name: str, source: str = "") -> None:
        self.module = module
        self.name = name
        where = f" in {source}" if source else ""
        super().__init__(f"refused to unpickle global {module}.{name}{where}: not on the allow-list")


class SnapshotError(L2FastError, ValueError):
    """An engine snapshot is corrupt, truncated, foreign or does not match the engine.

    Attributes:
        path: The snapshot file (None for in-memory state).
    """

    def __init__(self, message: str, path: object = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)


class BusUnavailableError(L2FastError):
    """Redis (the bus) stayed unreachable longer than allowed: the command gave up retrying.

    Attributes:
        url: The Redis URL (its password masked).
        error: The last connection error, as text.
        retries: Retries made before giving up.
        waited_s: How long Redis had been unreachable.
        reason: Why it gave up before the time limit (empty when the limit was reached).
    """

    def __init__(self, url: str, error: str, *, retries: int, waited_s: float, reason: str = "") -> None:
        self.url = url
        self.error = error
        self.retries = retries
        self.waited_s = waited_s
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(f"redis at {url} unreachable: {error}; gave up after {retries} retries "
                         f"in {waited_s:.1f} s{why}")


class BusAuthError(L2FastError):
    """Redis (the bus) refused this process, or its TLS connection failed: a wrong user or
    password, a command or key its ACL user may not use, a certificate that does not
    verify. Retrying cannot help, so no command retries it.

    Attributes:
        url: The Redis URL (its password masked).
        kind: ``"authentication"``, ``"permission"`` or ``"tls"``.
        error: What failed and what Redis or the TLS layer said.
    """

    def __init__(self, url: str, kind: str, error: str) -> None:
        self.url = url
        self.kind = kind
        self.error = error
        super().__init__(f"redis at {url}: {error}")
