"""Secrets: the keys that authenticate bus messages, snapshots and model manifests.

A secret is read from a file or an environment variable, never from the command line,
where ``ps`` and shell histories show it. Each kind of key has its own variables:

============ ============================ ========================
purpose      file variable                value variable
============ ============================ ========================
``bus``      ``L2FAST_BUS_KEY_FILE``      ``L2FAST_BUS_KEY``
``snapshot`` ``L2FAST_SNAPSHOT_KEY_FILE`` ``L2FAST_SNAPSHOT_KEY``
``model``    ``L2FAST_MODEL_KEY_FILE``    ``L2FAST_MODEL_KEY``
============ ============================ ========================

A file given explicitly (a command's ``--bus-key-file``...) wins over the variables, and
the file variable over the value variable. A key is at least :data:`MIN_KEY_BYTES` bytes
(e.g. ``openssl rand -hex 32 > bus.key``); a file's trailing newline is not part of it.

Every tag is an HMAC-SHA256 over the purpose's name, a zero byte, then the data, so a tag
made for one purpose never verifies for another even when an operator reuses one key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from enum import StrEnum

from l2fast._files import FileTooLargeError, NotRegularFileError, UnreadableFileError, read_regular_file
from l2fast.errors import ConfigError

#: Shortest key accepted: 32 bytes, the HMAC-SHA256 block's security level.
MIN_KEY_BYTES = 32
#: Longest secret file read: a key or a URL, never a document.
MAX_SECRET_BYTES = 4096
#: Hex characters of a tag (HMAC-SHA256).
TAG_CHARS = 64


class Purpose(StrEnum):
    """What a key authenticates; also the domain separator of its tags."""

    BUS = "bus"
    SNAPSHOT = "snapshot"
    MODEL = "model"


class SecretError(ConfigError):
    """A secret is missing, unreadable, too short or too long.

    Attributes:
        source: Where it was read from (a path or ``$VARIABLE``), never its value.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"secret from {source}: {reason}")


def key_variables(purpose: Purpose) -> tuple[str, str]:
    """The (file, value) environment variables of ``purpose``'s key."""
    name = f"L2FAST_{purpose.value.upper()}_KEY"
    return f"{name}_FILE", name


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The content of a secret file, without its trailing newline.

    Raises:
        SecretError: The file is missing, not a regular file, empty or larger than
            :data:`MAX_SECRET_BYTES`.
    """
    source = os.fspath(path)
    try:
        data = read_regular_file(source, MAX_SECRET_BYTES, "secret")
    except UnreadableFileError as exc:
        raise SecretError(source, f"cannot {'read' if exc.opened else 'open'}: {exc.strerror}") from None
    except NotRegularFileError:
        raise SecretError(source, "not a regular file") from None
    except FileTooLargeError as exc:
        found = f"{exc.size} bytes, more" if exc.size is not None else "more"
        raise SecretError(source, f"{found} than {MAX_SECRET_BYTES}") from None
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if not data:
        raise SecretError(source, "empty")
    return data


def read_secret(*, file: str | os.PathLike[str] | None = None, file_variable: str | None = None,
                variable: str | None = None) -> tuple[bytes, str] | None:
    """A secret and where it came from, or None when no source is set.

    Args:
        file: An explicit file (wins over the variables).
        file_variable: An environment variable naming a file.
        variable: An environment variable holding the secret itself.

    Raises:
        SecretError: A source is set but unusable (an empty variable counts as set).
    """
    if file is not None:
        return read_secret_file(file), os.fspath(file)
    if file_variable is not None and file_variable in os.environ:
        path = os.environ[file_variable]
        if not path:
            raise SecretError(f"${file_variable}", "set but empty")
        return read_secret_file(path), path
    if variable is not None and variable in os.environ:
        # The variable's bytes as the process got them (os.environ keeps bytes that are
        # not UTF-8 as surrogates): a binary key is the same key as in a file.
        value = os.fsencode(os.environ[variable])
        if not value:
            raise SecretError(f"${variable}", "set but empty")
        if len(value) > MAX_SECRET_BYTES:
            raise SecretError(f"${variable}", f"{len(value)} bytes, more than {MAX_SECRET_BYTES}")
        return value, f"${variable}"
    return None


def load_key(purpose: Purpose, file: str | os.PathLike[str] | None = None) -> Signer | None:
    """The signer of ``purpose`` from ``file`` or its environment variables, or None.

    Raises:
        SecretError: A source is set but unusable, or the key is shorter than
            :data:`MIN_KEY_BYTES`.
    """
    file_variable, variable = key_variables(purpose)
    found = read_secret(file=file, file_variable=file_variable, variable=variable)
    if found is None:
        return None
    key, source = found
    return Signer(key, purpose, source=source)


class Signer:
    """Makes and checks HMAC-SHA256 tags for one purpose.

    Args:
        key: The secret, at least :data:`MIN_KEY_BYTES` bytes.
        purpose: What the tags authenticate (their domain separator).
        source: Where the key came from, for error messages (never the key).

    Raises:
        SecretError: ``key`` is too short.
    """

    __slots__ = ("_prefix", "_key", "purpose", "source")

    def __init__(self, key: bytes, purpose: Purpose, *, source: str = "<memory>") -> None:
        if len(key) < MIN_KEY_BYTES:
            raise SecretError(source, f"a {purpose.value} key needs at least {MIN_KEY_BYTES} bytes, "
                                      f"got {len(key)} (make one with `openssl rand -hex 32`)")
        self._key = bytes(key)
        self._prefix = purpose.value.encode() + b"\0"
        self.purpose = purpose
        self.source = source

    def tag(self, data: bytes) -> str:
        """The hex tag of ``data``."""
        return hmac.new(self._key, self._prefix + data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes, tag: object) -> bool:
        """Whether ``tag`` is ``data``'s tag (in constant time; any non-tag is False)."""
        # compare_digest raises TypeError on non-ASCII text: such a tag is no tag.
        if not isinstance(tag, str) or len(tag) != TAG_CHARS or not tag.isascii():
            return False
        return hmac.compare_digest(self.tag(data), tag)

    def __repr__(self) -> str:
        return f"Signer({self.purpose.value}, from {self.source})"


__all__ = ["MAX_SECRET_BYTES", "MIN_KEY_BYTES", "Purpose", "SecretError", "Signer", "key_variables", "load_key",
           "read_secret", "read_secret_file"]

