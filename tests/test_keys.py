"""Secrets and tags (l2fast.keys): where keys come from, what they refuse, what a tag binds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from l2fast.keys import MAX_SECRET_BYTES, MIN_KEY_BYTES, Purpose, SecretError, Signer, load_key, read_secret

KEY = b"k" * MIN_KEY_BYTES


def _hmac_sha256(key: bytes, data: bytes) -> str:
    """RFC 2104 by hand (the reference the tags are checked against)."""
    block = 64
    key = key.ljust(block, b"\0") if len(key) <= block else hashlib.sha256(key).digest().ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + data).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


def test_a_tag_is_rfc2104_hmac_sha256_over_the_purpose_and_the_data() -> None:
    signer = Signer(KEY, Purpose.BUS)
    assert signer.tag(b"payload") == _hmac_sha256(KEY, b"bus\0payload")
    assert signer.verify(b"payload", _hmac_sha256(KEY, b"bus\0payload"))


def test_a_tag_of_one_purpose_does_not_verify_for_another() -> None:
    tag = Signer(KEY, Purpose.BUS).tag(b"x")
    assert not Signer(KEY, Purpose.SNAPSHOT).verify(b"x", tag)
    assert not Signer(KEY, Purpose.MODEL).verify(b"x", tag)


@pytest.mark.parametrize("tag", [None, 1, b"00" * 32, "", "0" * 63, "0" * 64, "zz" * 32, "\ufffd" + "0" * 63])
def test_anything_but_the_right_tag_is_refused(tag: object) -> None:
    assert not Signer(KEY, Purpose.BUS).verify(b"x", tag)


def test_a_changed_byte_or_key_fails_verification() -> None:
    signer = Signer(KEY, Purpose.BUS)
    tag = signer.tag(b"abc")
    assert not signer.verify(b"abd", tag)
    assert not Signer(b"j" * MIN_KEY_BYTES, Purpose.BUS).verify(b"abc", tag)


def test_a_short_key_is_refused_naming_its_source_not_its_value() -> None:
    with pytest.raises(SecretError, match=r"\$L2FAST_BUS_KEY.*at least 32 bytes, got 5") as err:
        Signer(b"short", Purpose.BUS, source="$L2FAST_BUS_KEY")
    assert "short" not in str(err.value)
    assert "short" not in repr(Signer(KEY, Purpose.BUS))


def test_the_key_file_wins_over_the_variables_and_loses_its_trailing_newline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "bus.key"
    file.write_bytes(b"f" * 40 + b"\n")
    other = tmp_path / "other.key"
    other.write_bytes(b"o" * 40)
    monkeypatch.setenv("L2FAST_BUS_KEY_FILE", str(other))
    monkeypatch.setenv("L2FAST_BUS_KEY", "v" * 40)
    signer = load_key(Purpose.BUS, file)
    assert signer is not None and signer.source == str(file)
    assert signer.tag(b"x") == _hmac_sha256(b"f" * 40, b"bus\0x")
    from_file_variable = load_key(Purpose.BUS)
    assert from_file_variable is not None and from_file_variable.source == str(other)
    monkeypatch.delenv("L2FAST_BUS_KEY_FILE")
    from_value = load_key(Purpose.BUS)
    assert from_value is not None and from_value.source == "$L2FAST_BUS_KEY"
    assert from_value.tag(b"x") == _hmac_sha256(b"v" * 40, b"bus\0x")


def test_no_source_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("L2FAST_SNAPSHOT_KEY", "L2FAST_SNAPSHOT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert load_key(Purpose.SNAPSHOT) is None


def test_an_empty_variable_is_an_error_not_an_absent_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2FAST_MODEL_KEY_FILE", raising=False)
    monkeypatch.setenv("L2FAST_MODEL_KEY", "")
    with pytest.raises(SecretError, match=r"\$L2FAST_MODEL_KEY: set but empty"):
        load_key(Purpose.MODEL)


def test_unusable_secret_files_are_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot open"):
        read_secret(file=tmp_path / "missing")
    with pytest.raises(SecretError, match="not a regular file"):
        read_secret(file=tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SecretError, match="not a regular file"):
        read_secret(file=fifo)
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(SecretError, match="empty"):
        read_secret(file=empty)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretError, match="more than"):
        read_secret(file=big)


def test_a_binary_key_in_the_variable_is_its_bytes_as_in_a_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Not UTF-8: Python keeps such environment bytes as surrogates, which str.encode refused
    # (an untyped UnicodeEncodeError from every command given such a key).
    raw = bytes(range(200, 240))
    file = tmp_path / "binary.key"
    file.write_bytes(raw)
    monkeypatch.delenv("L2FAST_BUS_KEY_FILE", raising=False)
    monkeypatch.setenv("L2FAST_BUS_KEY", os.fsdecode(raw))
    from_value = load_key(Purpose.BUS)
    from_file = load_key(Purpose.BUS, file)
    assert from_value is not None and from_file is not None
    assert from_value.tag(b"x") == from_file.tag(b"x") == _hmac_sha256(raw, b"bus\0x")
