"""Shared fixtures: the real Binance bars from ``../shared/data`` (or ``L2FAST_DATA_DIR``).

Tests that need the real data skip with a clear reason when it is absent; CI always has it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import REDIS_SERVER, RedisServer

DATA_DIR = Path(os.environ.get("L2FAST_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _load(name: str) -> dict[str, np.ndarray]:
    pd = pytest.importorskip("pandas")
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"real market data not found at {path} (set L2FAST_DATA_DIR)")
    df = pd.read_csv(path)
    return {col: df[col].to_numpy(dtype=np.int64 if col == "ts" else np.float64) for col in df.columns}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of the real market data (skips when it is absent)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real market data not found at {DATA_DIR} (set L2FAST_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def btc_1m() -> dict[str, np.ndarray]:
    """The full BTC/USDT 1-minute series as arrays keyed ts/open/high/low/close/volume."""
    return _load("btcusdt_1m.csv.gz")


@pytest.fixture(scope="session")
def eth_1m() -> dict[str, np.ndarray]:
    """The full ETH/USDT 1-minute series as arrays keyed ts/open/high/low/close/volume."""
    return _load("ethusdt_1m.csv.gz")


@pytest.fixture(scope="session")
def btc_1m_head(btc_1m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first 20,000 BTC bars, for tests that stream bar by bar through Python."""
    return {k: v[:20_000].copy() for k, v in btc_1m.items()}


def _need_redis() -> None:
    pytest.importorskip("redis")
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test module's own (append-only, loopback; tests/support.py)."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    _need_redis()
    s = RedisServer(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()
