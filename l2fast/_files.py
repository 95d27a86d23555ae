"""Bounded reads of files l2fast did not write, and atomic writes of the files it does.

:func:`read_regular_file` is how a key, a model manifest or signature, an export source
and a snapshot are read: opened non-blocking, refused unless ``fstat`` says it is a
regular file (a FIFO must not block the open until a writer comes, a device such as
``/dev/zero`` never ends), refused when its size is over the caller's limit, and read one
byte past the limit at most whatever the size said (a file growing meanwhile). Symlinks
are followed: a caller that must keep a file inside a folder checks the resolved path
first. Each refusal is a :class:`FileReadError` subclass carrying what the caller needs
to word its own error (its type and message are the caller's, and tests pin them).

:func:`write_atomically` is how a snapshot and a model signature are written: a
temporary file in the target's folder, ``fsync``, ``os.replace`` over the target, then
``fsync`` of the folder, so a crash at any point leaves the old file or the new one,
never a torn one.

Neither function is a kernel: the compiled modules never import this one.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from l2fast.errors import L2FastError

__all__ = ["FileReadError", "FileTooLargeError", "NotRegularFileError", "UnreadableFileError", "read_regular_file",
           "temporary_pattern", "write_atomically"]

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. O_BINARY
# exists on Windows only (no newline translation there).
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
# Smallest read request: a file that fstat says is small still costs one small buffer.
_MIN_READ = 1 << 20


class FileReadError(L2FastError):
    """A file :func:`read_regular_file` could not read or refused.

    Attributes:
        path: The path as the caller gave it.
        what: What the file is for (``"manifest"``, ``"snapshot"``...), in the message.
    """

    def __init__(self, path: str | os.PathLike[str], what: str, message: str) -> None:
        self.path = path
        self.what = what
        super().__init__(message)


class UnreadableFileError(FileReadError):
    """The open or a read failed (missing file, no permission, I/O error).

    Attributes:
        strerror: The system's reason (``"No such file or directory"``...).
        opened: Whether the open succeeded (False: the open itself failed).
    """

    def __init__(self, path: str | os.PathLike[str], what: str, error: OSError, *, opened: bool) -> None:
        self.strerror = error.strerror or str(error)
        self.opened = opened
        super().__init__(path, what, f"cannot {'read' if opened else 'open'} {what} {os.fspath(path)}: "
                                     f"{self.strerror}")


class NotRegularFileError(FileReadError):
    """The path names a folder, device, FIFO or socket (after following symlinks).

    Attributes:
        mode: Its ``st_mode`` (``stat.S_ISDIR(mode)`` tells a folder).
    """

    def __init__(self, path: str | os.PathLike[str], what: str, mode: int) -> None:
        self.mode = mode
        super().__init__(path, what, f"{what} {os.fspath(path)} is not a regular file")


class FileTooLargeError(FileReadError):
    """The file holds more than the caller's limit; at most one byte past it was read.

    Attributes:
        limit: The caller's limit in bytes.
        size: The size ``fstat`` reported, or None when the file grew past the limit
            while it was read.
    """

    def __init__(self, path: str | os.PathLike[str], what: str, limit: int, size: int | None) -> None:
        self.limit = limit
        self.size = size
        found = f"{size} bytes" if size is not None else "larger than that"
        super().__init__(path, what, f"{what} {os.fspath(path)}: {found}, more than the {limit}-byte limit")


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The whole content of the regular file at ``path``, refused beyond ``limit`` bytes.

    The size ``fstat`` reports is judged before anything is read, so a huge (even sparse)
    file costs no read; the reads then stop one byte past ``limit`` whatever that size
    said.

    Args:
        path: The file; symlinks are followed.
        limit: Most bytes accepted.
        what: What the file is for, in the messages (``"manifest"``, ``"snapshot"``...).

    Raises:
        UnreadableFileError: The open or a read failed.
        NotRegularFileError: A folder, device, FIFO or socket (refused without waiting).
        FileTooLargeError: More than ``limit`` bytes.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise UnreadableFileError(path, what, exc, opened=False) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(path, what, info.st_mode)
        if info.st_size > limit:
            raise FileTooLargeError(path, what, limit, info.st_size)
        chunks, size = [], 0
        # Ask for the size fstat gave plus one byte, so a file of that size is one read
        # and the EOF the next; never for more than the limit allows.
        while chunk := os.read(fd, min(limit + 1 - size, max(info.st_size + 1 - size, _MIN_READ))):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileTooLargeError(path, what, limit, None)
    except OSError as exc:
        raise UnreadableFileError(path, what, exc, opened=True) from exc
    finally:
        os.close(fd)
    return b"".join(chunks)


def temporary_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`write_atomically` gives its temporaries for a target named ``name``.

    ``.<name>.<random>.tmp``, the random part being :func:`tempfile.mkstemp`'s letters.
    """
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]+\.tmp")


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace the file at ``path`` by one holding ``data``, all or nothing.

    ``data`` goes to a temporary file in the same folder (named as
    :func:`temporary_pattern` says, mode 0600 as :func:`tempfile.mkstemp` creates it,
    which the target then keeps), is flushed to disk, renamed over ``path``, and the
    folder is flushed so the rename survives a crash too. On an error before the rename
    the temporary is removed and the target is left as it was.

    Args:
        path: The target file.
        data: Its new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: The folder is not writable, the disk is full...
    """
    target = Path(path)
    folder = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
