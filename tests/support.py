"""Helpers shared by several test modules (not tests themselves)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2fast.bus import Bar, InProcessTransport, L2BusAdapter, MessageBus, Topic
from l2fast.bus.bus import DEFAULT_POLICIES
from l2fast.bus.transport import Transport
from l2fast.cli.main import main
from l2fast.engine.generator import TacticalSignalGenerator
from l2fast.evaluation.paper import PaperBroker
from l2fast.evaluation.replay import BarStream, demo_config, merge_streams
from l2fast.keys import Purpose, Signer
from l2fast.signals import StrategicDecision

COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def write_csv(path: Path, bars: dict[str, np.ndarray]) -> Path:
    """Write bars as the data files' gzip CSV (``ts,open,high,low,close,volume``)."""
    with gzip.open(path, "wt") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for row in zip(*(bars[k] for k in COLUMNS)):
            fh.write(",".join([str(int(row[0]))] + [repr(float(x)) for x in row[1:]]) + "\n")
    return path


def exit_code(argv: list[str]) -> int:
    """``main``'s exit code, argparse's own exits (bad option values) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def merged_bars(streams: Sequence[BarStream]) -> list[Bar]:
    """Every stream's bars in the replay's order (open time, stream order), as bus bars."""
    which, columns = merge_streams(streams)
    rows = zip(*(columns[c].tolist() for c in COLUMNS))
    return [Bar(streams[k].symbol, *row) for k, row in zip(which.tolist(), rows)]


#: The tests' bus key: 64 hex digits, as ``openssl rand -hex 32`` makes one.
BUS_KEY = "5e1f" * 16


def bus_key_file(folder: Path) -> Path:
    """:data:`BUS_KEY` in ``folder/bus.key``, mode 600 (the README's recipe)."""
    path = folder / "bus.key"
    path.write_text(BUS_KEY + "\n")
    path.chmod(0o600)
    return path


def bus_signer() -> Signer:
    """The signer of :data:`BUS_KEY`, as ``load_key`` gives it from :func:`bus_key_file`."""
    return Signer(BUS_KEY.encode(), Purpose.BUS)


#: The redis-server binary, or None (tests that need it skip).
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` process on a loopback port with append-only persistence in ``folder``
    (without any persistence when not ``appendonly``: a restart loses everything)."""

    def __init__(self, folder: Path, *, appendonly: bool = True) -> None:
        self.folder = folder
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always", "--save", "",
             "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.folder / 'redis.log'})")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: Redis writes its append-only file and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


async def drive(transport: Transport, inputs: Sequence[tuple[str, Any]], *, signer: Signer | None = None,
                expected_signals: int | None = None, until: str | None = None, generator: Any = None,
                ) -> tuple[list[Any], L2BusAdapter, list[dict[str, str]]]:
    """Publish ``inputs`` (messages, signed by the bus when it has ``signer``, or raw bytes)
    to a worker on that bus and collect its signals and dead letters: ``expected_signals``
    of them, or up to the first for the symbol ``until``."""
    bus = MessageBus(transport, signer=signer)
    signals = await bus.subscribe([Topic.SIGNALS], group="l1", consumer="l1-0")
    adapter = L2BusAdapter(bus, generator if generator is not None else TacticalSignalGenerator(), signals="all",
                           consumer="w1")
    worker = asyncio.create_task(adapter.start_processing())
    for topic, item in inputs:
        if isinstance(item, (bytes, str)):
            await bus.publish_raw(topic, item)
        else:
            await bus.publish(topic, item)

    async def next_signal() -> Any:
        # A worker that died fails the test at once, with its error.
        get = asyncio.ensure_future(signals.get())
        await asyncio.wait({get, worker}, return_when=asyncio.FIRST_COMPLETED)
        if not get.done():
            get.cancel()
            worker.result()
            raise AssertionError("the worker stopped")
        return get.result()

    got = []
    while len(got) != expected_signals and (until is None or not got or got[-1].message.symbol != until):
        received = await next_signal()
        assert received.error is None, received.error  # the worker's own signals are well formed (and signed)
        got.append(received)
    await adapter.stop()
    await worker  # raises if the worker died
    dead = await transport.dead_letters()
    await bus.close()
    return got, adapter, dead


def in_process() -> InProcessTransport:
    """An in-process transport with the bus's default queue policies."""
    return InProcessTransport(DEFAULT_POLICIES)


def paper_desk_replay(streams: Sequence[BarStream], decision: StrategicDecision, *,
                      split: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a bus desk on the demo config must reproduce: the signals (``to_dict``) and a
    paper L1's fills of an in-process replay of ``streams`` under ``decision``.

    One engine and paper L1 for every symbol, or (``split``: one worker per symbol) one
    of each per symbol.
    """
    desks: dict[str | None, tuple[TacticalSignalGenerator, PaperBroker]] = {}
    for symbol in [s.symbol for s in streams] if split else [None]:
        gen = TacticalSignalGenerator(config=demo_config())
        gen.on_strategic_decision(decision)
        desks[symbol] = (gen, PaperBroker(gen.config.engine.initial_equity))
    which, columns = merge_streams(streams)
    expected, fills = [], []
    for k, *row in zip(which.tolist(), *(columns[c].tolist() for c in COLUMNS)):
        symbol = streams[k].symbol
        gen, broker = desks[symbol if split else None]
        ts, o, h, lo, c, _ = row
        for f in broker.on_bar(symbol, ts, o, h, lo, c):
            gen.on_fill(f.symbol, f.side, f.qty, f.price, f.ts_ms, fee=f.fee)
            fills.append({"symbol": f.symbol, "side": f.side, "qty": f.qty, "price": f.price,
                          "ts_ms": f.ts_ms, "fee": f.fee})
        sig = gen.on_bar(symbol, *row)
        broker.on_signal(sig)
        expected.append(sig.to_dict())
    return expected, fills
