"""The shared file helpers: bounded non-blocking reads and atomic writes (l2fast/_files.py).

Each caller (keys, model manifests and signatures, export sources, snapshots) words the
refusals its own way; their own tests pin those messages. These pin the helpers.
"""

from __future__ import annotations

import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

from l2fast._files import (
    FileReadError,
    FileTooLargeError,
    NotRegularFileError,
    UnreadableFileError,
    read_regular_file,
    temporary_pattern,
    write_atomically,
)


def _read_in_thread(path: Path, limit: int = 100) -> BaseException | bytes:
    """What ``read_regular_file`` returns or raises, failing the test if it blocks."""
    result: list[BaseException | bytes] = []

    def run() -> None:
        try:
            result.append(read_regular_file(path, limit, "test file"))
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        # Release the blocked open (a writer appears) so the thread can end.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading {path} blocked")
    return result[0]


def test_a_regular_file_is_read_whole_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100, "test file") == b"x" * 100
    assert read_regular_file(str(path), 1000, "test file") == b"x" * 100
    path.write_bytes(b"")
    assert read_regular_file(path, 0, "test file") == b""


def test_a_file_over_the_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLargeError, match=r"test file .*/f: 101 bytes, more than the 100-byte limit") as exc:
        read_regular_file(path, 100, "test file")
    assert (exc.value.size, exc.value.limit, exc.value.path, exc.value.what) == (101, 100, path, "test file")


def test_a_huge_sparse_file_is_refused_before_any_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(64 << 30)  # sparse: nothing is written
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(FileTooLargeError) as exc:
        read_regular_file(path, 1 << 20, "test file")
    assert exc.value.size == 64 << 30 and reads == []


def test_a_file_growing_past_the_limit_is_read_one_byte_past_it_at_most(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # fstat says 10 bytes, the file holds 5000: as if it grew between the fstat and the reads.
    path = tmp_path / "growing"
    path.write_bytes(b"y" * 5000)
    real_fstat, real_read, got = os.fstat, os.read, []

    def small_fstat(fd: int) -> os.stat_result:
        info = list(real_fstat(fd))
        info[stat.ST_SIZE] = 10
        return os.stat_result(info)

    def counting_read(fd: int, n: int) -> bytes:
        got.append(chunk := real_read(fd, n))
        return chunk

    monkeypatch.setattr(os, "fstat", small_fstat)
    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(FileTooLargeError, match="larger than that, more than the 1000-byte limit") as exc:
        read_regular_file(path, 1000, "test file")
    assert exc.value.size is None and sum(map(len, got)) == 1001


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused = _read_in_thread(fifo)
    assert isinstance(refused, NotRegularFileError) and stat.S_ISFIFO(refused.mode)
    assert str(refused) == f"test file {fifo} is not a regular file"


def test_a_device_is_refused_without_reading_it() -> None:
    refused = _read_in_thread(Path("/dev/zero"))
    assert isinstance(refused, NotRegularFileError) and stat.S_ISCHR(refused.mode)


def test_a_directory_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFileError) as exc:
        read_regular_file(tmp_path, 100, "test file")
    assert stat.S_ISDIR(exc.value.mode)


def test_a_missing_file_fails_at_the_open(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match=r"cannot open test file .*/missing: No such file") as exc:
        read_regular_file(tmp_path / "missing", 100, "test file")
    assert not exc.value.opened and exc.value.strerror == os.strerror(2)
    assert isinstance(exc.value.__cause__, FileNotFoundError)


def test_symlinks_are_followed_to_what_they_name(tmp_path: Path) -> None:
    # The callers that keep files inside a folder check the resolved path themselves.
    target, fifo = tmp_path / "target", tmp_path / "fifo"
    target.write_bytes(b"content")
    os.mkfifo(fifo)
    for name, to in (("to_file", target), ("to_fifo", fifo), ("dangling", tmp_path / "nothing")):
        (tmp_path / name).symlink_to(to)
    assert read_regular_file(tmp_path / "to_file", 100, "test file") == b"content"
    assert isinstance(_read_in_thread(tmp_path / "to_fifo"), NotRegularFileError)
    with pytest.raises(UnreadableFileError, match="No such file"):
        read_regular_file(tmp_path / "dangling", 100, "test file")


@pytest.mark.parametrize("error", [
    UnreadableFileError("/x", "key", PermissionError(13, "Permission denied"), opened=True),
    NotRegularFileError("/x", "key", stat.S_IFIFO),
    FileTooLargeError("/x", "key", 10, None),
])
def test_the_errors_pickle_with_their_attributes(error: FileReadError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    assert write_atomically(path, b"new") == path
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    # mkstemp's mode, which the target keeps.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_atomic_write_to_a_bare_name_writes_in_the_working_folder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert write_atomically("bare", b"data") == Path("bare")
    assert (tmp_path / "bare").read_bytes() == b"data"


@pytest.mark.parametrize("fail", ["replace", "fsync"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     fail: str) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    temporaries: list[str] = []

    def failing(*args: object) -> None:
        temporaries.extend(str(a) for a in args[:1] if not isinstance(a, int))
        # KeyboardInterrupt too: an interrupted write must not leave its temporary either.
        raise OSError(28, "No space left on device") if fail == "replace" else KeyboardInterrupt

    monkeypatch.setattr(os, fail, failing)
    with pytest.raises(OSError if fail == "replace" else KeyboardInterrupt):
        write_atomically(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    if fail == "replace":
        # The temporary it had made carried the name temporary_pattern describes.
        assert temporary_pattern("out.bin").fullmatch(Path(temporaries[0]).name)


def test_the_temporary_pattern_matches_only_the_targets_own_temporaries() -> None:
    pattern = temporary_pattern("a.l2snap")
    assert pattern.fullmatch(".a.l2snap.x1_z9.tmp")
    assert not any(pattern.fullmatch(n) for n in (".b.l2snap.x1.tmp", "a.l2snap.x1.tmp", ".a.l2snap..tmp",
                                                  ".aXl2snap.x1.tmp", ".a.l2snap.x1.tmp.keep"))
