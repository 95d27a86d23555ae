"""Crash-safe engine state: :meth:`TacticalSignalGenerator.snapshot` and ``.restore``.

A snapshot holds everything an engine has learnt from its input: positions, cash and
fees, pending entries, the day's counters and the loss-limit latch, live trade
statistics, L3's decision, every symbol's technical state (aggregators, indicators,
candlestick rings, support/resistance levels, the feature vector), the voters'
technical memory and counters, and the return correlations. Restoring it and feeding
the bars, fills and decisions that followed gives the same signals, bit for bit, as an
engine that never stopped.

File format (little endian), version :data:`FORMAT_VERSION` (3: a flags word and an
optional keyed tag; format 2 had neither, format 1 did not name the symbols; both are
refused)::

    magic      8 bytes  b"L2FSNAP\\x00"
    version    u32
    flags      u32: bit 0 set when the file is signed (:data:`FLAG_SIGNED`); no other bit
    header     u32 length + UTF-8 JSON: format, l2fast version, layout hash, machine,
               created_ms, the full config, models_dir and each member's ONNX SHA-256,
               symbols in slot order, the L3 decision, ensemble failure counters
    state      u64 length + the compiled core's state bytes (l2fast.engine._snapshot),
               which start with the symbols in slot order
    checksum   32 bytes: SHA-256 of everything before it
    tag        signed files only: 64 ASCII hex digits, the HMAC-SHA256 of everything
               before it under the snapshot key (:class:`l2fast.keys.Signer`, purpose
               ``snapshot``)

The checksum catches damage, not forgery: whoever can write the file can recompute it.
The tag catches forgery by anyone without the snapshot key (``--snapshot-key-file``, or
``$L2FAST_SNAPSHOT_KEY_FILE`` / ``$L2FAST_SNAPSHOT_KEY``; :func:`l2fast.keys.load_key`).
With a key, a restore refuses a file that is not signed or whose tag does not verify;
without one, it refuses a signed file (a key is needed to trust it): either way the
checksum and the tag are checked before a byte of the header or the state is parsed.
An engine given a key signs every snapshot it writes. Give the worker the key whenever
its snapshot lives where someone else can write (shared storage).

Keyed or not, nothing in the file is trusted further than its checks: every count, index,
ring position and size in the state bytes is checked against the engine built from the
header's config before it is used (one place per kernel family, _snapshot.pyx), and the
symbol order of the header must be the one the state bytes name, so a restore either
gives a state the live code could have produced or raises :class:`SnapshotError`,
leaving the engine as it was. Only a regular file of at most :data:`MAX_SNAPSHOT_BYTES`
is read (a device, FIFO or folder is refused before any read).

The state bytes are raw C structs, so a snapshot loads only into the same compiled
layout on the same kind of machine (:data:`~l2fast.engine._snapshot.LAYOUT_HASH`, a hash of
the core's ``.pxd`` contracts, and the CPU architecture): a snapshot written by another
build is refused, not misread. Plan upgrades at a flat book, or replay from the last
compatible snapshot with the old build.

Writes are atomic: a temporary file in the same folder (``.<name>.<random>.tmp``),
``fsync``, ``os.replace`` over the target, then ``fsync`` of the folder; a crash at any
point leaves the previous snapshot or the new one, never a torn file. Temporaries of
that name left by crashed writers are removed by the next write once older than
:data:`STALE_TMP_SECONDS` (a younger one may belong to a writer still running). Nothing
is unpickled on restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2fast import __version__
from l2fast._files import (
    FileTooLargeError,
    NotRegularFileError,
    UnreadableFileError,
    read_regular_file,
    temporary_pattern,
    write_atomically,
)
from l2fast.config import L2Config
from l2fast.engine._engine import MAX_SYMBOLS
from l2fast.engine._snapshot import LAYOUT_HASH
from l2fast.errors import ConfigError, L2FastError, SnapshotError
from l2fast.keys import TAG_CHARS, Purpose, Signer, key_variables
from l2fast.signals import StrategicDecision

if TYPE_CHECKING:
    from l2fast.engine.generator import TacticalSignalGenerator

__all__ = ["FLAG_SIGNED", "FORMAT_VERSION", "MAGIC", "MAX_SNAPSHOT_BYTES", "MAX_STATE_BYTES_PER_SYMBOL",
           "STALE_TMP_SECONDS", "read_snapshot", "restore", "snapshot", "snapshot_signer", "write_snapshot"]

MAGIC = b"L2FSNAP\x00"
FORMAT_VERSION = 3
#: Flags bit of a signed snapshot (a tag follows the checksum).
FLAG_SIGNED = 1
_DIGEST = 32
_PREFIX = len(MAGIC) + 8  # magic, version, flags
_LENGTHS = 12  # the header's u32 and the state's u64 length fields
_MAX_HEADER = 16 * 1024 * 1024
#: Bound on one symbol's share of the state bytes: the default config's is about 0.2 MB
#: (its windows are a few hundred values); this leaves room for configs with windows
#: tens of times longer.
MAX_STATE_BYTES_PER_SYMBOL = 8 * 1024 * 1024
#: Largest file :func:`read_snapshot` reads by default (``max_bytes`` overrides it): the
#: header's bound, the per-symbol bound for every slot, and the framing.
MAX_SNAPSHOT_BYTES = _MAX_HEADER + MAX_SYMBOLS * MAX_STATE_BYTES_PER_SYMBOL + 64 * 1024
#: Age after which a temporary left by a writer of the same target counts as stale.
STALE_TMP_SECONDS = 60.0


def _machine() -> dict[str, Any]:
    return {"arch": platform.machine(), "byteorder": sys.byteorder, "pointer_bytes": struct.calcsize("P")}


def snapshot_signer(signer: Signer | None) -> Signer | None:
    """``signer`` if it is a snapshot key's (None passes).

    Raises:
        ConfigError: ``signer`` is not a :class:`~l2fast.keys.Signer` of purpose
            ``snapshot``: another purpose's key must not vouch for engine state.
    """
    if signer is not None and (not isinstance(signer, Signer) or signer.purpose is not Purpose.SNAPSHOT):
        raise ConfigError(f"signer={signer!r}: a snapshot needs the snapshot key's signer "
                          "(l2fast.keys.load_key(Purpose.SNAPSHOT, file))")
    return signer


def encode(header: dict[str, Any], state: bytes, *, signer: Signer | None = None) -> bytes:
    """The snapshot file's bytes for ``header`` and the core's ``state`` (module docstring).

    Args:
        header: The header object.
        state: The compiled core's state bytes.
        signer: The snapshot key's signer: the file is signed (None: not signed).
    """
    signer = snapshot_signer(signer)
    # Key order is kept: the order of model.weights is the ensemble's member order.
    head = json.dumps(header, allow_nan=False).encode()
    flags = FLAG_SIGNED if signer is not None else 0
    body = b"".join((MAGIC, struct.pack("<II", FORMAT_VERSION, flags), struct.pack("<I", len(head)), head,
                     struct.pack("<Q", len(state)), state))
    body += hashlib.sha256(body).digest()
    return body if signer is None else body + signer.tag(body).encode("ascii")


def _key_hint() -> str:
    file_variable, variable = key_variables(Purpose.SNAPSHOT)
    return f"--snapshot-key-file FILE, or ${file_variable} / ${variable}"


def _authenticate(data: bytes, signer: Signer | None, path: object) -> bytes:
    """Check the flags, the checksum and the tag of a whole file; return what they cover.

    Nothing past the fixed prefix is parsed before they pass.
    """
    (flags,) = struct.unpack_from("<I", data, len(MAGIC) + 4)
    if flags & ~FLAG_SIGNED:
        raise SnapshotError(f"unknown flags {flags:#x} (this l2fast knows only {FLAG_SIGNED:#x}, signed)", path)
    signed = bool(flags & FLAG_SIGNED)
    if signer is not None and not signed:
        raise SnapshotError("not signed, and a snapshot key is configured: refusing a snapshot written "
                            "without the key (or forged)", path)
    if signer is None and signed:
        raise SnapshotError(f"signed with a snapshot key: restoring it needs that key ({_key_hint()})", path)
    tag = b""
    if signed:
        if len(data) < _PREFIX + _LENGTHS + _DIGEST + TAG_CHARS:
            raise SnapshotError("checksum mismatch: the file is corrupt or truncated (no room for its tag)", path)
        data, tag = data[:-TAG_CHARS], data[-TAG_CHARS:]
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("checksum mismatch: the file is corrupt or truncated", path)
    # latin-1 decodes any bytes; a tag that is not hex simply does not verify.
    if signer is not None and not signer.verify(data, tag.decode("latin-1")):
        raise SnapshotError(f"signature mismatch: written with another snapshot key than {signer.source}, "
                            "or forged", path)
    return body


def decode(data: bytes, path: object = None, *, signer: Signer | None = None) -> tuple[dict[str, Any], bytes]:
    """Check and split a snapshot's bytes into its header and the core's state.

    Args:
        data: The file's bytes.
        path: The file, for error messages.
        signer: The snapshot key's signer: only a file it signed is accepted. None:
            only an unsigned file is.

    Raises:
        SnapshotError: Not a snapshot, another format version, truncated, its checksum
            does not match (corrupt), or it is not signed as ``signer`` says (module
            docstring): unsigned with a key, mis-signed, or signed without a key.
    """
    signer = snapshot_signer(signer)
    if len(data) < _PREFIX + _LENGTHS + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("not an l2fast engine snapshot (bad magic)", path)
    (version,) = struct.unpack_from("<I", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {version}, this l2fast reads format {FORMAT_VERSION}", path)
    body = _authenticate(data, signer, path)
    pos = _PREFIX
    (head_len,) = struct.unpack_from("<I", body, pos)
    pos += 4
    if head_len > _MAX_HEADER or pos + head_len + 8 > len(body):
        raise SnapshotError(f"header length {head_len} runs past the end of the file", path)
    try:
        header = json.loads(body[pos:pos + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"header is not valid JSON: {exc}", path) from None
    pos += head_len
    (state_len,) = struct.unpack_from("<Q", body, pos)
    pos += 8
    if pos + state_len != len(body):
        raise SnapshotError(f"state length {state_len} does not match the file size", path)
    if not isinstance(header, dict):
        raise SnapshotError("header is not a JSON object", path)
    return header, body[pos:]


def write_snapshot(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, then remove stale temporaries of crashed writers.

    :func:`l2fast._files.write_atomically`: temporary file, fsync, rename, fsync of the folder.
    """
    target = write_atomically(path, data)
    _remove_stale_temporaries(target.parent, target.name)
    return target


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    # Only write_atomically's names for this very target, only regular files, only old
    # ones: a younger temporary may be another writer's, still running.
    pattern = temporary_pattern(name)
    cutoff = time.time() - STALE_TMP_SECONDS
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            # Gone already (another writer cleaned it) or not ours to remove: no matter.
            continue


def read_snapshot(path: str | os.PathLike[str], *, max_bytes: int | None = None,
                  signer: Signer | None = None) -> tuple[dict[str, Any], bytes]:
    """Read, check and split the snapshot at ``path`` (see :func:`decode`).

    Args:
        path: The snapshot file.
        max_bytes: Largest file accepted (default :data:`MAX_SNAPSHOT_BYTES`).
        signer: The snapshot key's signer (see :func:`decode`).

    Raises:
        SnapshotError: The file is missing, unreadable, not a regular file, larger than
            ``max_bytes``, corrupt, of another format, or not signed as ``signer`` says.
    """
    signer = snapshot_signer(signer)
    limit = MAX_SNAPSHOT_BYTES if max_bytes is None else max_bytes
    try:
        data = read_regular_file(path, limit, "snapshot")
    except UnreadableFileError as exc:
        raise SnapshotError(f"cannot read: {exc.strerror}", path) from None
    except NotRegularFileError:
        raise SnapshotError("not a regular file (a folder, device, FIFO or socket)", path) from None
    except FileTooLargeError as exc:
        found = f"{exc.size} bytes: larger" if exc.size is not None else "larger"
        raise SnapshotError(f"{found} than the {limit}-byte limit of a snapshot", path) from None
    return decode(data, path, signer=signer)


def snapshot(gen: TacticalSignalGenerator, path: str | os.PathLike[str], *, signer: Signer | None = None) -> Path:
    """Write ``gen``'s whole state to ``path`` atomically (module docstring).

    Args:
        gen: The engine.
        path: The snapshot file.
        signer: The snapshot key's signer: the file is signed (None: it is not).

    Returns:
        The path written.
    """
    state = gen.export_state()
    header = {
        "format": FORMAT_VERSION,
        "l2fast": __version__,
        "layout": LAYOUT_HASH,
        "machine": _machine(),
        "created_ms": int(time.time() * 1000),
        "config": gen.config.to_dict(),
        "models_dir": str(gen.models_dir),
        "members": list(gen.members),
        # By name: the order the header has always had (the engine's is the vote's).
        "models": {name: gen.manifests[name].get("onnx_sha256") for name in sorted(gen.manifests)},
        "symbols": list(state.symbols),
        "decision": state.decision.to_dict() if state.decision is not None else None,
        "ensemble_failures": state.ensemble_failures,
        "last_ensemble_error": state.last_ensemble_error,
    }
    return write_snapshot(path, encode(header, state.core, signer=signer))


def _check_compatible(header: dict[str, Any], path: object) -> None:
    if header.get("layout") != LAYOUT_HASH:
        raise SnapshotError(f"written by an l2fast build with state layout {header.get('layout')!r} "
                            f"(l2fast {header.get('l2fast')}); this build's layout is {LAYOUT_HASH!r}", path)
    if header.get("machine") != _machine():
        raise SnapshotError(f"written on {header.get('machine')!r}, this machine is {_machine()!r}", path)
    for key, kind in (("config", dict), ("members", list), ("models", dict), ("symbols", list), ("models_dir", str)):
        if not isinstance(header.get(key), kind):
            raise SnapshotError(f"header lacks {key!r} (a JSON {kind.__name__})", path)
    if not all(type(s) is str for s in header["symbols"]) or len(header["symbols"]) > MAX_SYMBOLS:
        raise SnapshotError(f"header symbols {header['symbols']!r}: at most {MAX_SYMBOLS} strings", path)
    failures, last_error = header.get("ensemble_failures", 0), header.get("last_ensemble_error")
    if type(failures) is not int or not 0 <= failures < 2 ** 63 or not isinstance(last_error, (str, type(None))):
        raise SnapshotError(f"header ensemble failures {failures!r} / {last_error!r}: a count and a message", path)


def restore(cls: type[TacticalSignalGenerator], path: str | os.PathLike[str], *,
            models_dir: str | os.PathLike[str] | None = None, max_bytes: int | None = None,
            signer: Signer | None = None, model_signer: Signer | None = None) -> TacticalSignalGenerator:
    """Build an engine from the snapshot at ``path`` (module docstring).

    Args:
        cls: The engine class to build.
        path: The snapshot file.
        models_dir: Where the ensemble's ONNX models are now (default: where they were
            when the snapshot was written); each must have the snapshot's SHA-256.
        max_bytes: Largest file accepted (default :data:`MAX_SNAPSHOT_BYTES`).
        signer: The snapshot key's signer: the file must carry its tag (and the engine
            built signs its own snapshots with it). None: the file must be unsigned.
        model_signer: The model key's signer: every member's manifest must be signed
            with it (:func:`l2fast.models.loading.load_model`).

    Raises:
        SnapshotError: The file is corrupt, not signed as ``signer`` says, foreign
            (another build or machine), or does not fit (a model changed or is refused,
            e.g. not signed with ``model_signer``; the state does not match the config).
    """
    # Imported here: the generator imports this module.
    from l2fast.engine.generator import EngineState

    header, state = read_snapshot(path, max_bytes=max_bytes, signer=signer)
    _check_compatible(header, path)
    try:
        config = L2Config.from_dict(header["config"])
    except ConfigError as exc:
        raise SnapshotError(f"config in the snapshot is not valid here: {exc}", path) from None
    folder = models_dir if models_dir is not None else header["models_dir"]
    try:
        gen = cls(config, models_dir=folder, model_signer=model_signer, snapshot_signer=signer)
    except L2FastError as exc:
        raise SnapshotError(f"cannot rebuild the engine: {exc}", path) from None
    now = {name: m.get("onnx_sha256") for name, m in gen.manifests.items()}
    if now != header["models"]:
        changed = sorted(n for n in set(now) | set(header["models"]) if now.get(n) != header["models"].get(n))
        raise SnapshotError(f"ensemble models differ from the snapshot's in {folder}: {changed}", path)
    if list(gen.members) != header["members"] or gen.config.to_dict() != header["config"]:
        raise SnapshotError(f"the rebuilt engine's config differs from the snapshot's (members "
                            f"{list(gen.members)} vs {header['members']})", path)
    try:
        decision = None if header.get("decision") is None else StrategicDecision.from_dict(header["decision"])
    except L2FastError as exc:
        raise SnapshotError(f"decision in the snapshot is not valid: {exc}", path) from None
    try:
        gen.import_state(EngineState(tuple(header["symbols"]), decision, header.get("ensemble_failures", 0),
                                     header.get("last_ensemble_error"), state))
    except L2FastError as exc:
        # A malformed symbol is the engine's InvalidInputError: from a file, a bad snapshot.
        raise SnapshotError(str(exc), path) from None
    return gen
