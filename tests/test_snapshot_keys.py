"""Keyed snapshots (issue 16 item 4): with a snapshot key the file carries an HMAC tag
over everything in it, checked before anything is parsed; a signed engine continues bit
for bit; forged (checksum recomputed), unsigned, mis-signed files and wrong keys are
refused; a signed file is refused without a key."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import pytest

from l2fast import L2Config, StrategicDecision, TacticalSignalGenerator
from l2fast.engine import snapshot as snapshot_module
from l2fast.engine.snapshot import FLAG_SIGNED, MAGIC, decode, encode, read_snapshot
from l2fast.errors import ConfigError, SnapshotError
from l2fast.evaluation.paper import PaperBroker
from l2fast.evaluation.synthetic import generate_bars
from l2fast.keys import TAG_CHARS, Purpose, Signer, load_key

BTC = "BTC/USDT"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
CONFIG = {
    "model": {"consensus_threshold": 0.0, "alignment_threshold": 0.0, "confidence_threshold": 0.0},
    "risk": {"kelly_win_rate": 0.55, "kelly_payoff_ratio": 1.5, "allow_short": True, "max_daily_trades": 50,
             "min_trades_for_live_stats": 3},
}
KEY = Signer(b"k" * 32, Purpose.SNAPSHOT, source="test key")
OTHER_KEY = Signer(b"o" * 32, Purpose.SNAPSHOT, source="other key")
DIGEST = 32


def _rows(n: int, seed: int) -> list[tuple]:
    bars = generate_bars(n, seed=seed, start_price=42_000.0)
    return list(zip(*(bars[c].tolist() for c in COLUMNS)))


def _decision(ts_ms: int | None) -> StrategicDecision:
    return StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="aggressive",
                             universe=[BTC], ts_ms=ts_ms)


def _run(rows: list[tuple], restart_every: int | None, path: Path) -> tuple[list[dict], TacticalSignalGenerator]:
    """Signals of an engine with a paper L1; restarted from a signed snapshot every N bars."""
    gen = TacticalSignalGenerator(L2Config.from_dict(CONFIG), snapshot_signer=KEY)
    gen.on_strategic_decision(_decision(None))
    broker = PaperBroker(gen.config.engine.initial_equity)
    out = []
    for k, row in enumerate(rows):
        if restart_every and k and k % restart_every == 0:
            gen = TacticalSignalGenerator.restore(gen.snapshot(path), signer=KEY)
        ts, o, h, lo, c, _ = row
        for f in broker.on_bar(BTC, ts, o, h, lo, c):
            gen.on_fill(f.symbol, f.side, f.qty, f.price, f.ts_ms, fee=f.fee)
        signal = gen.on_bar(BTC, *row)
        broker.on_signal(signal)
        out.append(signal.to_dict())
    return out, gen


def test_signed_snapshots_continue_bit_for_bit(tmp_path) -> None:
    rows = _rows(4_000, seed=11)
    expected, ref = _run(rows, None, tmp_path / "s.l2snap")
    got, restored = _run(rows, 613, tmp_path / "s.l2snap")
    assert got == expected
    assert restored._dump_state() == ref._dump_state()
    assert ref.trade_stats["trades"] > 0  # positions opened and closed across the restarts
    # The restored engine keeps signing with the key it was restored with.
    assert restored.snapshot_signer is KEY
    data = restored.snapshot(tmp_path / "again.l2snap").read_bytes()
    assert struct.unpack_from("<I", data, len(MAGIC) + 4)[0] == FLAG_SIGNED
    assert KEY.verify(data[:-TAG_CHARS], data[-TAG_CHARS:].decode())


@pytest.fixture
def signed(tmp_path) -> Path:
    gen = TacticalSignalGenerator(snapshot_signer=KEY)
    gen.on_strategic_decision(_decision(1_704_067_200_000))
    for row in _rows(500, seed=22):
        gen.on_bar(BTC, *row)
    return gen.snapshot(tmp_path / "signed.l2snap")


def _reseal(data: bytes) -> bytes:
    """``data`` (a signed file, its content changed) with its SHA-256 recomputed, the old tag kept."""
    body = data[:-TAG_CHARS - DIGEST]
    return body + hashlib.sha256(body).digest() + data[-TAG_CHARS:]


def test_a_key_read_from_a_file_signs_and_verifies(tmp_path, signed) -> None:
    key_file = tmp_path / "snapshot.key"
    key_file.write_text("k" * 32 + "\n")
    signer = load_key(Purpose.SNAPSHOT, key_file)
    assert signer is not None
    restored = TacticalSignalGenerator.restore(signed, signer=signer)
    assert restored.symbols == (BTC,)


def test_restore_with_the_wrong_key_is_refused(signed) -> None:
    with pytest.raises(SnapshotError, match="signature mismatch") as caught:
        TacticalSignalGenerator.restore(signed, signer=OTHER_KEY)
    assert caught.value.path == signed and str(signed) in str(caught.value)


def test_an_unsigned_snapshot_is_refused_with_a_key(tmp_path) -> None:
    path = TacticalSignalGenerator().snapshot(tmp_path / "plain.l2snap")
    with pytest.raises(SnapshotError, match="not signed") as caught:
        TacticalSignalGenerator.restore(path, signer=KEY)
    assert str(path) in str(caught.value)


def test_a_signed_snapshot_is_refused_without_a_key(signed) -> None:
    with pytest.raises(SnapshotError, match="needs that key.*--snapshot-key-file.*L2FAST_SNAPSHOT_KEY"):
        TacticalSignalGenerator.restore(signed)


def test_a_stripped_tag_with_the_flag_cleared_is_refused(signed) -> None:
    # The forger drops the tag, clears the flag and recomputes the checksum: a valid
    # unsigned file, which a keyed restore must not take.
    data = bytearray(signed.read_bytes()[:-TAG_CHARS - DIGEST])
    struct.pack_into("<I", data, len(MAGIC) + 4, 0)
    signed.write_bytes(bytes(data) + hashlib.sha256(bytes(data)).digest())
    assert TacticalSignalGenerator.restore(signed).symbols == (BTC,)  # a genuine unsigned file now
    with pytest.raises(SnapshotError, match="not signed"):
        TacticalSignalGenerator.restore(signed, signer=KEY)


def test_forged_content_with_a_recomputed_checksum_is_refused_before_parsing(signed, monkeypatch) -> None:
    header, state = read_snapshot(signed, signer=KEY)
    header["decision"]["target_exposure"] = 1.0  # what a forger wants
    forged = encode(header, state, signer=OTHER_KEY)  # any tag but the key's
    signed.write_bytes(forged)

    def parsed(*args, **kwargs):
        raise AssertionError("parsed before the tag was checked")

    # Neither the header's JSON nor the state bytes may be read before the tag passes.
    monkeypatch.setattr(snapshot_module.json, "loads", parsed)
    monkeypatch.setattr(TacticalSignalGenerator, "import_state", parsed)
    with pytest.raises(SnapshotError, match="signature mismatch"):
        TacticalSignalGenerator.restore(signed, signer=KEY)


def test_a_header_that_is_not_even_json_is_refused_as_mis_signed(signed) -> None:
    # Checksum recomputed: the unkeyed checks would say "not valid JSON"; the tag says
    # first that the file is not the key holder's.
    data = bytearray(signed.read_bytes())
    data[len(MAGIC) + 12] = ord("!")  # first byte of the header's JSON
    with pytest.raises(SnapshotError, match="signature mismatch"):
        decode(_reseal(bytes(data)), signed, signer=KEY)


def test_thousands_of_forged_variants_with_recomputed_checksums_are_all_refused(signed) -> None:
    data = signed.read_bytes()
    rng = random.Random(16)
    end = len(data) - TAG_CHARS - DIGEST
    refused = 0
    for _ in range(2_000):
        forged = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8))):
            # Anywhere after the version and flags: header, lengths, state bytes.
            forged[rng.randrange(len(MAGIC) + 8, end)] ^= rng.randint(1, 255)
        with pytest.raises(SnapshotError, match="signature mismatch"):
            decode(_reseal(bytes(forged)), signed, signer=KEY)
        refused += 1
    assert refused == 2_000


def test_a_damaged_signed_file_is_reported_as_corrupt(signed) -> None:
    data = bytearray(signed.read_bytes())
    data[len(data) // 2] ^= 0x40
    signed.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        TacticalSignalGenerator.restore(signed, signer=KEY)


@pytest.mark.parametrize("cut", [1, TAG_CHARS, TAG_CHARS + 40])
def test_a_truncated_signed_file_is_refused(signed, cut) -> None:
    signed.write_bytes(signed.read_bytes()[:-cut])
    with pytest.raises(SnapshotError, match="checksum mismatch|signature mismatch"):
        TacticalSignalGenerator.restore(signed, signer=KEY)


def test_unknown_flags_are_refused(signed) -> None:
    data = bytearray(signed.read_bytes())
    struct.pack_into("<I", data, len(MAGIC) + 4, FLAG_SIGNED | 4)
    with pytest.raises(SnapshotError, match="unknown flags 0x5"):
        decode(bytes(data), signed, signer=KEY)


def test_another_purposes_key_cannot_sign_or_verify_snapshots(tmp_path) -> None:
    bus_key = Signer(b"k" * 32, Purpose.BUS)
    with pytest.raises(ConfigError, match="snapshot key"):
        TacticalSignalGenerator(snapshot_signer=bus_key)
    path = TacticalSignalGenerator(snapshot_signer=KEY).snapshot(tmp_path / "s.l2snap")
    with pytest.raises(ConfigError, match="snapshot key"):
        TacticalSignalGenerator.restore(path, signer=bus_key)
    # The same key bytes under another purpose give other tags (keys.py's domain separation).
    assert Signer(b"k" * 32, Purpose.MODEL).tag(b"x") != KEY.tag(b"x")


def test_decode_splits_what_a_keyed_encode_joins() -> None:
    header = {"format": 3, "x": [1, 2.5, None]}
    data = encode(header, b"\x01\x02\x03", signer=KEY)
    assert decode(data, signer=KEY) == (header, b"\x01\x02\x03")
    assert len(data) == len(encode(header, b"\x01\x02\x03")) + TAG_CHARS


# ---------------------------------------------------------------------------------------
# the worker: no unsigned snapshot where another user can write


@pytest.mark.parametrize("mode_of", ["folder", "file"])
def test_the_worker_refuses_an_unsigned_snapshot_other_users_can_write(tmp_path: Path, mode_of: str) -> None:
    from l2fast.bus.worker import WorkerOptions, build_generator

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o700)
    path = folder / "w.l2snap"
    path.write_bytes(b"forged bytes: never read")
    (folder if mode_of == "folder" else path).chmod(0o777 if mode_of == "folder" else 0o666)
    with pytest.raises(ConfigError, match=r"writable by other users .*--snapshot-key-file"):
        build_generator(WorkerOptions(snapshot=str(path)))
    # With the key the file is read (and refused: it is no snapshot).
    with pytest.raises(SnapshotError, match="bad magic"):
        build_generator(WorkerOptions(snapshot=str(path), snapshot_signer=KEY))


def test_the_worker_keeps_an_unsigned_snapshot_in_a_private_folder(tmp_path: Path) -> None:
    from l2fast.bus.worker import WorkerOptions, build_generator

    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    gen = build_generator(WorkerOptions(snapshot=str(folder / "w.l2snap")))
    assert gen.snapshot_signer is None

