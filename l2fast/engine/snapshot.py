"""Crash-safe engine state: :meth:`TacticalSignalGenerator.snapshot` and ``.restore``.

A snapshot holds everything an engine has learnt from its input: positions, cash and
fees, pending entries, the day's counters and the loss-limit latch, live trade
statistics, L3's decision, every symbol's technical state (aggregators, indicators,
candlestick rings, support/resistance levels, the feature vector), the voters'
technical memory and counters, and the return correlations. Restoring it and feeding
the bars, fills and decisions that followed gives the same signals, bit for bit, as an
engine that never stopped.

File format (little endian), version :data:`FORMAT_VERSION`::

    magic      8 bytes  b"L2FSNAP\\x00"
    version    u32
    header     u32 length + UTF-8 JSON: format, l2fast version, layout hash, machine,
               created_ms, the full config, models_dir and each member's ONNX SHA-256,
               symbols in slot order, the L3 decision, ensemble failure counters
    state      u64 length + the compiled core's state bytes (l2fast.engine._snapshot)
    checksum   32 bytes: SHA-256 of everything before it

The state bytes are raw C structs, so a snapshot loads only into the same compiled
layout on the same kind of machine (:data:`~l2fast.engine._snapshot.LAYOUT_HASH`, a hash of
the core's ``.pxd`` contracts, and the CPU architecture): a snapshot written by another
build is refused, not misread. Plan upgrades at a flat book, or replay from the last
compatible snapshot with the old build.

Writes are atomic: a temporary file in the same folder, ``fsync``, ``os.replace`` over
the target, then ``fsync`` of the folder; a crash at any point leaves the previous
snapshot or the new one, never a torn file. Nothing is unpickled on restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2fast import __version__
from l2fast.config import L2Config
from l2fast.engine._snapshot import LAYOUT_HASH
from l2fast.errors import ConfigError, L2FastError, SnapshotError
from l2fast.signals import StrategicDecision

if TYPE_CHECKING:
    from l2fast.engine.generator import TacticalSignalGenerator

__all__ = ["FORMAT_VERSION", "MAGIC", "read_snapshot", "restore", "snapshot", "write_snapshot"]

MAGIC = b"L2FSNAP\x00"
FORMAT_VERSION = 1
_DIGEST = 32
_MAX_HEADER = 16 * 1024 * 1024


def _machine() -> dict[str, Any]:
    return {"arch": platform.machine(), "byteorder": sys.byteorder, "pointer_bytes": struct.calcsize("P")}


def encode(header: dict[str, Any], state: bytes) -> bytes:
    """The snapshot file's bytes for ``header`` and the core's ``state`` (module docstring)."""
    # Key order is kept: the order of model.weights is the ensemble's member order.
    head = json.dumps(header, allow_nan=False).encode()
    body = b"".join((MAGIC, struct.pack("<I", FORMAT_VERSION), struct.pack("<I", len(head)), head,
                     struct.pack("<Q", len(state)), state))
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, path: object = None) -> tuple[dict[str, Any], bytes]:
    """Check and split a snapshot's bytes into its header and the core's state.

    Raises:
        SnapshotError: Not a snapshot, another format version, truncated, or its
            checksum does not match (corrupt).
    """
    if len(data) < len(MAGIC) + 8 + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("not an l2fast engine snapshot (bad magic)", path)
    (version,) = struct.unpack_from("<I", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {version}, this l2fast reads format {FORMAT_VERSION}", path)
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("checksum mismatch: the file is corrupt or truncated", path)
    pos = len(MAGIC) + 4
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
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync folder)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
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


def read_snapshot(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """Read, check and split the snapshot at ``path`` (see :func:`decode`).

    Raises:
        SnapshotError: The file is missing, unreadable, corrupt or of another format.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read: {exc.strerror or exc}", path) from None
    return decode(data, path)


def snapshot(gen: TacticalSignalGenerator, path: str | os.PathLike[str]) -> Path:
    """Write ``gen``'s whole state to ``path`` atomically (module docstring).

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
    return write_snapshot(path, encode(header, state.core))


def _check_compatible(header: dict[str, Any], path: object) -> None:
    if header.get("layout") != LAYOUT_HASH:
        raise SnapshotError(f"written by an l2fast build with state layout {header.get('layout')!r} "
                            f"(l2fast {header.get('l2fast')}); this build's layout is {LAYOUT_HASH!r}", path)
    if header.get("machine") != _machine():
        raise SnapshotError(f"written on {header.get('machine')!r}, this machine is {_machine()!r}", path)
    for key in ("config", "members", "models", "symbols", "models_dir"):
        if key not in header:
            raise SnapshotError(f"header lacks {key!r}", path)


def restore(cls: type[TacticalSignalGenerator], path: str | os.PathLike[str], *,
            models_dir: str | os.PathLike[str] | None = None) -> TacticalSignalGenerator:
    """Build an engine from the snapshot at ``path`` (module docstring).

    Args:
        cls: The engine class to build.
        path: The snapshot file.
        models_dir: Where the ensemble's ONNX models are now (default: where they were
            when the snapshot was written); each must have the snapshot's SHA-256.

    Raises:
        SnapshotError: The file is corrupt, foreign (another build or machine), or does
            not fit (a model changed, the state does not match the config).
    """
    # Imported here: the generator imports this module.
    from l2fast.engine.generator import EngineState

    header, state = read_snapshot(path)
    _check_compatible(header, path)
    try:
        config = L2Config.from_dict(header["config"])
    except ConfigError as exc:
        raise SnapshotError(f"config in the snapshot is not valid here: {exc}", path) from None
    folder = models_dir if models_dir is not None else header["models_dir"]
    try:
        gen = cls(config, models_dir=folder)
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
        gen.import_state(EngineState(tuple(header["symbols"]), decision, int(header.get("ensemble_failures", 0)),
                                     header.get("last_ensemble_error"), state))
    except SnapshotError as exc:
        raise SnapshotError(str(exc), path) from None
    return gen
