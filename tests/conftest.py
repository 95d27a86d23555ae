"""Shared fixtures: the real Binance bars from ``../shared/data`` (or ``L2FAST_DATA_DIR``), and
FinRL's reference recordings from ``build/finrl-reference`` (or ``L2FAST_FINRL_REFERENCE``).

Tests that need the real data skip with a clear reason when it is absent; CI always has it.
Tests that need FinRL's recordings skip, naming the command that makes them, unless
``L2FAST_REQUIRE_FINRL=1`` (set by ``.ci/run``), which makes a missing recording a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from support import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("L2FAST_DATA_DIR", ROOT.parent / "shared" / "data"))
FINRL_REFERENCE = Path(os.environ.get("L2FAST_FINRL_REFERENCE", ROOT / "build" / "finrl-reference"))
FINRL_COMMAND = "bash .ci/finrl_venv.sh && build/finrl-venv/bin/python tests/finrl/reference.py"


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


def _finrl_missing(what: str) -> NoReturn:
    message = (f"FinRL's reference recordings: {what} (make them with `{FINRL_COMMAND}`, "
               f"or set L2FAST_FINRL_REFERENCE; tests/finrl/README.md)")
    if os.environ.get("L2FAST_REQUIRE_FINRL") == "1":
        pytest.fail(f"{message}; L2FAST_REQUIRE_FINRL=1 forbids skipping them", pytrace=False)
    pytest.skip(message)


class FinrlRecordings:
    """The recordings ``tests/finrl/reference.py`` made with FinRL 0.3.7 (its README lists them).

    Each accessor skips the test (or fails it, with ``L2FAST_REQUIRE_FINRL=1``) when its file
    is missing, naming the command that makes it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._scenarios: dict[str, dict[str, np.ndarray]] = {}

    def path(self, relative: str) -> Path:
        """A file of the recordings (``btc_plain.npz``, ``models/btc_ppo.zip``), which must exist."""
        path = self.folder / relative
        if not path.is_file():
            _finrl_missing(f"{path} not found")
        return path

    def scenario(self, name: str) -> dict[str, np.ndarray]:
        """Every array of ``<name>.npz`` (``btc_plain``, ``btc_eth_turb``, ...), loaded once."""
        if name not in self._scenarios:
            with np.load(self.path(f"{name}.npz")) as npz:
                self._scenarios[name] = {key: npz[key] for key in npz.files}
        return self._scenarios[name]

    def params(self, name: str) -> dict[str, Any]:
        """The scenario's ``params_json``: env kwargs, indicators, state layout, agents, spans."""
        return json.loads(str(self.scenario(name)["params_json"]))


@pytest.fixture(scope="session")
def finrl_reference() -> FinrlRecordings:
    """FinRL's reference recordings (skips, or fails under ``L2FAST_REQUIRE_FINRL=1``, without them)."""
    if not (FINRL_REFERENCE / "summary.json").is_file():
        _finrl_missing(f"{FINRL_REFERENCE / 'summary.json'} not found")
    return FinrlRecordings(FINRL_REFERENCE)


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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module that trains or runs SB3 agents (restored after)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A copy of the shipped models folder, for a test to add or edit members in."""
    from l2fast.data import models_dir

    folder = tmp_path / "models"
    shutil.copytree(models_dir(), folder)
    return folder
