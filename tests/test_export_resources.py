"""Export resources (issue 16 item 5): hostile sources are refused before they cost memory.

The finding: a 4.2 MB zip declaring 4 GiB peaked at 8.66 GB for 58 s before it was
refused; an allow-listed ``bytearray(3 GiB)`` in a pickle reached 3.4 GB. Each case here
runs ``python -m l2fast.export`` in a child whose address space is capped (so a
regression fails fast instead of swapping the machine) and checks a clean typed refusal,
the child's peak RSS under 1 GiB, and the time.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from l2fast.errors import ExportError, UnsafePickleError
from l2fast.export.safe_pickle import MAX_ALLOCATION_BYTES, MAX_EXPANDED_ITEMS, safe_loads
from l2fast.export.sources import (
    MAX_CENTRAL_DIRECTORY_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_DATA_BYTES,
    MAX_MEMBER_BYTES,
    load_source,
)

GIB = 1 << 30
MIB = 1 << 20
STORED, DEFLATED = 0, 8

# The child: cap the address space (torch alone maps ~0.75 GB), run the export CLI, and
# report the exit status, the peak resident memory and the time taken.
CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from l2fast.export.__main__ import main
started = time.perf_counter()
code = main(sys.argv[2:])
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child
# forked from a large test process would report that process's size.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": time.perf_counter() - started, "peak_rss": peak}))
"""
ADDRESS_SPACE = 2 * GIB
PEAK_RSS = 1 * GIB


def _deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes (``size`` a multiple of 1 MiB), and its CRC-32.

    Each 1 MiB block is compressed after a full flush, so every block's bytes are the same:
    4 GiB of zeros is 4,096 copies of about 1 kB, made in a moment (as an attacker would).
    """
    block = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(block, crc)
    return chunk * (size // MIB) + compressor.flush(zlib.Z_FINISH), crc


def _zip(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip archive of (name, method, compressed bytes, uncompressed size, CRC-32) members,
    with ZIP64 size fields (as zipfile writes for members of 4 GiB and more)."""
    out, central = bytearray(), bytearray()
    for name, method, data, size, crc in members:
        raw_name = name.encode()
        zip64 = struct.pack("<HHQQ", 1, 16, size, len(data))
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF,
                           0xFFFFFFFF, len(raw_name), len(zip64)) + raw_name + zip64 + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(raw_name), len(zip64), 0, 0, 0, 0, offset) + raw_name + zip64
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def _stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, STORED, data, len(data), zlib.crc32(data)


def _deflated(name: str, size: int) -> tuple[str, int, bytes, int, int]:
    data, crc = _deflated_zeros(size)
    return name, DEFLATED, data, size, crc


DATA = _stored("data", json.dumps({"policy_class": {}, "observation_space": {}, "action_space": {}}).encode())


def _long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _bundle(value: bytes) -> bytes:
    """A protocol 2 pickle of ``{"model": <value>}``, ``value`` being pickle opcodes."""
    return b"\x80\x02}X\x05\x00\x00\x00model" + value + b"s."


def _export(tmp_path: Path, name: str, data: bytes) -> tuple[dict, str]:
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("onnx")
    source = tmp_path / name
    source.write_bytes(data)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).parents[1]),
                                                                  os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", CHILD, str(ADDRESS_SPACE), str(source), "--out",
                           str(tmp_path / "out"), "--samples", "10"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "out").exists()
    return report, done.stderr


def _assert_refused_cleanly(report: dict, stderr: str, match: str) -> None:
    assert report["code"] == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr  # one typed line, no traceback
    assert "MemoryError" not in stderr and "unexpected" not in stderr
    assert re.search(match, lines[0]), lines[0]
    assert report["peak_rss"] < PEAK_RSS, report
    assert report["seconds"] < 10, report  # the old code took 58 s before refusing


def test_a_small_zip_declaring_4_gib_is_refused_before_inflating(tmp_path) -> None:
    bomb = _zip([DATA, _deflated("policy.pth", 4 * GIB)])
    assert len(bomb) < 5 * MIB  # the finding's 4.2 MB
    report, stderr = _export(tmp_path, "bomb.zip", bomb)
    _assert_refused_cleanly(report, stderr, rf"member 'policy.pth' declares {4 * GIB} bytes uncompressed .* "
                                            rf"more than the {MAX_MEMBER_BYTES}-byte limit")


def test_a_zip_bomb_under_the_size_limit_is_refused_by_its_ratio(tmp_path) -> None:
    bomb = _zip([DATA, _deflated("policy.pth", 200 * MIB)])
    assert len(bomb) < MIB
    report, stderr = _export(tmp_path, "ratio.zip", bomb)
    _assert_refused_cleanly(report, stderr, rf"'policy.pth' declares {200 * MIB} bytes from \d+ compressed, "
                                            rf"a ratio over {MAX_COMPRESSION_RATIO}")


def test_a_bundle_allocating_a_3_gib_bytearray_is_refused(tmp_path) -> None:
    pickled = _bundle(b"cbuiltins\nbytearray\n" + _long1(3 * GIB) + b"\x85R")
    report, stderr = _export(tmp_path, "alloc.pkl", pickled)
    _assert_refused_cleanly(report, stderr, rf"bytearray\({3 * GIB}\) would allocate {3 * GIB} bytes, more than "
                                            rf"the {MAX_ALLOCATION_BYTES}-byte cap")


def test_policy_pth_that_is_itself_a_zip_bomb_is_refused(tmp_path) -> None:
    # torch.save writes policy.pth as a zip; torch.load would inflate its records.
    inner = _zip([_deflated("archive/data/0", GIB)])
    report, stderr = _export(tmp_path, "inner.zip", _zip([DATA, _stored("policy.pth", inner)]))
    _assert_refused_cleanly(report, stderr, r"\(policy.pth\): member 'archive/data/0' declares")


def test_a_data_entry_over_its_limit_is_refused(tmp_path) -> None:
    archive = _zip([_deflated("data", 128 * MIB), _stored("policy.pth", b"")])
    with pytest.raises(ExportError, match=f"member 'data' declares {128 * MIB} bytes .* {MAX_DATA_BYTES}-byte limit"):
        load_source(_write(tmp_path / "data.zip", archive))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_header_that_lies_about_a_small_size_cannot_inflate_more(tmp_path) -> None:
    # Declares 1 kB, carries 100 MB of deflated zeros: zipfile stops at the declared size
    # and the CRC check fails; the read never holds more than the declaration.
    data, crc = _deflated_zeros(100 * MIB)
    lying = _zip([DATA, ("policy.pth", DEFLATED, data, 1024, crc)])
    with pytest.raises(ExportError, match="corrupt zip archive"):
        load_source(_write(tmp_path / "lying.zip", lying))


def test_an_oversized_central_directory_is_refused_before_parsing(tmp_path) -> None:
    archive = bytearray(_zip([DATA, _stored("policy.pth", b"")]))
    struct.pack_into("<I", archive, len(archive) - 22 + 12, MAX_CENTRAL_DIRECTORY_BYTES + 1)
    with pytest.raises(ExportError, match=f"central directory is {MAX_CENTRAL_DIRECTORY_BYTES + 1} bytes"):
        load_source(_write(tmp_path / "cd.zip", bytes(archive)))


def test_an_oversized_source_file_is_refused_unread(tmp_path, monkeypatch) -> None:
    from l2fast.export import sources

    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 1000)
    with pytest.raises(ExportError, match="2000 bytes, more than the 1000-byte limit"):
        load_source(_write(tmp_path / "big.zip", bytes(2000)))
    fifo = tmp_path / "fifo.pkl"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        load_source(fifo)  # refused at once, not blocked waiting for a writer


@pytest.mark.parametrize("size", [3 * GIB, MAX_ALLOCATION_BYTES + 1])
def test_bytes_and_bytearray_sizes_over_the_cap_are_refused(size) -> None:
    for kind in (b"bytes", b"bytearray"):
        with pytest.raises(ExportError, match=f"would allocate {size} bytes"):
            safe_loads(b"\x80\x02cbuiltins\n" + kind + b"\n" + _long1(size) + b"\x85R.", source="alloc")
    # Within the cap, and the data-carrying forms, still load.
    assert safe_loads(b"\x80\x02cbuiltins\nbytearray\nK\x03\x85R.", source="ok") == bytearray(3)
    assert safe_loads(pickle.dumps(bytearray(b"abc"), protocol=2), source="ok") == bytearray(b"abc")


def test_numpy_arrays_over_the_cap_are_refused() -> None:
    reconstruct = (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _long1(3 * GIB)
                   + b"\x85C\x01b\x87R.")
    with pytest.raises(ExportError, match=f"shape \\({3 * GIB},\\) and 1-byte items would allocate"):
        safe_loads(reconstruct, source="array")
    # A subarray dtype hides the size in the itemsize: still counted.
    dtype = pickle.dumps(np.dtype(("f8", (1 << 20, 64))), protocol=2)[2:-1]
    hidden = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x01\x85" + dtype + b"\x87R."
    with pytest.raises(ExportError, match="would allocate 536870912 bytes"):
        safe_loads(hidden, source="array")
    # numpy.ndarray itself may only be named, never called.
    called = b"\x80\x02cnumpy\nndarray\n" + _long1(3 * GIB) + b"\x85\x85R."
    with pytest.raises(UnsafePickleError, match="numpy.ndarray.*only as a class reference"):
        safe_loads(called, source="array")


def test_shared_references_that_expand_to_a_billion_items_are_refused() -> None:
    row = [0.0] * 1000
    grid = [row] * 1000
    cube = [grid] * 1000  # a billion floats to np.asarray, from a pickle of a few kB
    raw = pickle.dumps({"model": b"", "action_space": {"type": "box", "low": cube}}, protocol=2)
    assert len(raw) < 20_000
    with pytest.raises(ExportError, match=f"expands to more than {MAX_EXPANDED_ITEMS} items"):
        safe_loads(raw, source="laughs")


def test_deep_nesting_and_cycles_are_refused_without_recursion_errors() -> None:
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ExportError, match="deeper than 100 levels"):
        safe_loads(pickle.dumps(deep, protocol=2), source="deep")
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ExportError, match="deeper than 100 levels"):
        safe_loads(pickle.dumps(cycle, protocol=2), source="cycle")
