"""The shipped demo agents (saved_models/, l2fast/data/onnx_models/) and the recipe that trains them (export/).

The bundles are read through l2fast's restricted unpickler, never plain pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from l2fast.data import models_dir

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # The recipes live in the top-level export/ folder, not in the installed package.
    sys.path.insert(0, str(REPO))

NAMES = ("trend_agent", "mean_revert_agent", "volatility_agent")
SPECIALIZATIONS = {
    "trend_agent": "trend",
    "mean_revert_agent": "mean_reversion",
    "volatility_agent": "volatility_breakout",
}
SEED_KEYS = {
    "model",
    "scaler",
    "feature_names",
    "action_space",
    "specialization",
    "performance_metrics",
    "training_config",
}
METRICS = (
    "total_return",
    "sharpe",
    "max_drawdown",
    "win_rate",
    "avg_win",
    "avg_loss",
    "payoff_ratio",
    "n_trades",
    "exposure",
    "buy_and_hold_return",
)
TARGETS = [-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]


def _safe_load(path: Path) -> dict:
    safe_pickle = pytest.importorskip("l2fast.export.safe_pickle")
    return safe_pickle.safe_load(path)


@pytest.fixture(scope="module", params=NAMES)
def shipped(request: pytest.FixtureRequest) -> tuple[str, dict]:
    path = REPO / "saved_models" / f"{request.param}.pkl"
    assert path.is_file(), f"{path} is missing: run python -m training.train_agents"
    return request.param, _safe_load(path)


def _plain(value: object, where: str) -> None:
    """Fail unless ``value`` is built only from plain containers, numbers, text, bytes, arrays."""
    from sklearn.preprocessing import StandardScaler

    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            _plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
    else:
        ok = (str, int, float, bool, bytes, type(None), np.ndarray, StandardScaler)
        assert type(value) in ok, f"{where}: {type(value).__module__}.{type(value).__qualname__}"


def test_shipped_bundles_have_the_seed_format_keys(shipped: tuple[str, dict]) -> None:
    pytest.importorskip("sklearn")
    name, bundle = shipped
    assert SEED_KEYS <= set(bundle)
    assert bundle["specialization"] == SPECIALIZATIONS[name]
    assert bundle["action_space"] == 7
    assert bundle["action_targets"] == pytest.approx(TARGETS)
    assert bundle["model"][:2] == b"PK", "model must be the bytes of an SB3 zip archive"
    assert type(bundle["scaler"]).__name__ == "StandardScaler"
    assert bundle["scaler"].n_features_in_ == len(bundle["feature_names"])
    assert isinstance(bundle["lookback"], int) and bundle["lookback"] > 0
    _plain(bundle, name)


def test_shipped_bundle_feature_names_are_technical_core_names(shipped: tuple[str, dict]) -> None:
    from l2fast.technical.state import TechnicalState

    name, bundle = shipped
    known = set(TechnicalState().names)
    features = bundle["feature_names"]
    assert len(features) == len(set(features))
    assert [f for f in features if f not in known] == []
    # Every feature comes from one of the agent's declared timeframes.
    assert {f.rsplit("_", 1)[1] for f in features} == set(bundle["timeframes"])


def test_shipped_bundle_metrics_are_finite_and_measured_on_2024(shipped: tuple[str, dict]) -> None:
    name, bundle = shipped
    metrics = bundle["performance_metrics"]
    for key in METRICS:
        assert isinstance(metrics[key], int | float) and math.isfinite(metrics[key]), (name, key)
    assert metrics["n_trades"] > 0
    assert 0.0 <= metrics["win_rate"] <= 1.0 and 0.0 <= metrics["max_drawdown"] <= 1.0
    assert metrics["period_start"] == "2024-01-01T00:00:00Z"
    assert metrics["period_end"].startswith("2024-06-2")
    config = bundle["training_config"]
    assert config["periods"]["train"] == ["2022-01-01", "2024-01-01"]
    assert config["periods"]["validation"][0] == "2024-01-01"
    assert config["train_period"][0].startswith("2022-01-")
    assert config["train_period"][1] <= "2024-01-01T00:00:00Z"
    assert config["data"] == "btcusdt_1m.csv.gz"
    assert config["decision_minutes"] == metrics["decision_minutes"]
    assert config["timesteps"] > 0 and config["seed"] == 0 and config["fee_bps"] == 10.0
    assert config["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}


def test_shipped_bundles_load_through_the_exporter_source_loader(shipped: tuple[str, dict]) -> None:
    sources = pytest.importorskip("l2fast.export.sources")
    pytest.importorskip("stable_baselines3")
    name, bundle = shipped
    agent = sources.load_source(REPO / "saved_models" / f"{name}.pkl")
    assert agent.algorithm == "PPO"
    assert agent.observation_size == len(bundle["feature_names"])
    assert agent.action_space.n == 7
    assert agent.feature_names == bundle["feature_names"]


def test_shipped_artifacts_stay_small() -> None:
    files = list((REPO / "saved_models").glob("*.pkl")) + list(models_dir().glob("*"))
    assert sum(f.stat().st_size for f in files) < 400_000


def test_shipped_onnx_models_validate_and_come_from_the_shipped_bundles() -> None:
    folder = models_dir()
    if not any(folder.glob("*.onnx")):
        pytest.skip(f"{folder} holds no exported model yet: "
                    "python -m l2fast.export saved_models/ --out l2fast/data/onnx_models/")
    import l2fast

    report = l2fast.validate_models(folder)
    assert report == {"passed": 3, "total": 3, "failures": []}
    for name in NAMES:
        manifest = json.loads((folder / f"{name}.json").read_text())
        bundle_bytes = (REPO / "saved_models" / f"{name}.pkl").read_bytes()
        assert manifest["source"]["sha256"] == hashlib.sha256(bundle_bytes).hexdigest()
        assert manifest["specialization"] == SPECIALIZATIONS[name]


# --- the recipe's parts --------------------------------------------------------------------


def test_env_reward_is_position_times_return_minus_fee_and_episodes_are_seeded() -> None:
    pytest.importorskip("gymnasium")
    from training.env import REWARD_SCALE, TradingEnv

    obs = np.arange(20, dtype=np.float32).reshape(10, 2)
    log_ret = np.linspace(-0.01, 0.01, 10)
    env = TradingEnv(obs, log_ret, episode_steps=3, fee=0.001)
    first, _ = env.reset(seed=5)
    t = int(first[0]) // 2
    _, r1, term, trunc, _ = env.step(6)  # flat -> long 1
    assert r1 == pytest.approx(REWARD_SCALE * (log_ret[t] - 0.001))
    _, r2, _, _, _ = env.step(0)  # long 1 -> short 1: pays for a change of 2
    assert r2 == pytest.approx(REWARD_SCALE * (-log_ret[t + 1] - 0.002))
    _, r3, term, trunc, _ = env.step(3)
    assert r3 == pytest.approx(REWARD_SCALE * -0.001) and trunc and not term
    again, _ = TradingEnv(obs, log_ret, episode_steps=3, fee=0.001).reset(seed=5)
    assert np.array_equal(first, again)


def test_env_episodes_never_cross_from_one_segment_into_the_next() -> None:
    pytest.importorskip("gymnasium")
    from training.env import TradingEnv

    obs = np.arange(12, dtype=np.float32)[:, None]
    env = TradingEnv(obs, np.zeros(12), episode_steps=4, fee=0.0, segments=(5, 7))
    for seed in range(200):
        row = int(env.reset(seed=seed)[0][0])
        last = row
        for _ in range(4):
            o, *_ = env.step(3)
            last = int(o[0])
        assert (row < 5 and last < 5) or row >= 5


def test_backtest_trade_accounting_with_fees() -> None:
    from training.backtest import backtest

    # long 1 for two steps, flat, then short 1/3 to the end (closed on the last decision)
    position = np.array([1.0, 1.0, 0.0, -1 / 3, -1 / 3])
    log_ret = np.log1p(np.array([0.01, -0.005, 0.02, -0.03, 0.01]))
    fee = 0.001
    m = backtest(position, log_ret, fee, decision_minutes=60)
    long_trade = 0.01 - 0.005 - 2 * fee
    short_trade = (0.03 - 0.01) / 3 - 2 * fee / 3
    net = np.array([0.01 - fee, -0.005, -fee, 0.01 - fee / 3, -0.01 / 3 - fee / 3])
    assert m["n_trades"] == 2 and m["win_rate"] == 1.0
    assert m["avg_win"] == pytest.approx((long_trade + short_trade) / 2)
    assert m["avg_loss"] == 0.0 and m["payoff_ratio"] == 0.0
    assert m["total_return"] == pytest.approx(np.prod(1 + net) - 1)
    assert m["sharpe"] == pytest.approx(net.mean() / net.std() * math.sqrt(365 * 24))
    assert m["exposure"] == pytest.approx(0.8)
    equity = np.cumprod(1 + net)
    assert m["max_drawdown"] == pytest.approx(np.max(1 - equity / np.maximum.accumulate(equity)))


def test_decision_periods_do_not_reach_past_their_end_and_mirror_flips_returns() -> None:
    from l2fast.evaluation.synthetic import generate_bars
    from l2fast.technical.bars import BarValidator
    from training.data import compute_features, decision_period, mirror_bars, to_ms

    bars = generate_bars(3_000, seed=3, start_ts=to_ms("2024-01-01"))
    names = ["rsi_14_5m", "ret_1_15m"]
    features = compute_features(bars, names)
    end = to_ms("2024-01-02T12:00")
    train = decision_period(bars, features, 15, to_ms("2024-01-01"), end)
    valid = decision_period(bars, features, 15, end, None)
    assert train.next_time[-1] == end and valid.time[0] == end
    assert np.all(train.time % (15 * 60_000) == 0) and np.isfinite(train.features).all()
    mirrored = mirror_bars(bars)
    BarValidator().check_many(*mirrored.values())
    m_train = decision_period(mirrored, compute_features(mirrored, names), 15, to_ms("2024-01-01"), end)
    assert np.allclose(m_train.log_ret, -train.log_ret, atol=1e-12)


def test_training_recipe_smoke_run_on_a_generated_series_gives_a_valid_bundle(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("sklearn")
    from training.train_agents import main

    out = tmp_path / "models"
    argv = [
        "--agents", "mean_revert_agent",
        "--data", str(tmp_path / "no-data-here"),
        "--synthetic-bars", "20000",
        "--train-start", "2024-01-01",
        "--train-end", "2024-01-10",
        "--valid-end", "2024-01-14",
        "--timesteps", "512",
        "--jobs", "1",
        "--out", str(out),
        "--no-export",
    ]  # fmt: skip
    assert main(argv) == 0
    path = out / "mean_revert_agent.pkl"
    bundle = _safe_load(path)
    assert SEED_KEYS <= set(bundle)
    _plain(bundle, "smoke")
    assert bundle["training_config"]["data"].startswith("l2fast.evaluation.synthetic.generate_bars")
    assert bundle["performance_metrics"]["period_start"] == "2024-01-10T00:00:00Z"
    assert all(math.isfinite(bundle["performance_metrics"][k]) for k in METRICS)
    agent = pytest.importorskip("l2fast.export.sources").load_source(path)
    assert agent.observation_size == len(bundle["feature_names"])
    export = pytest.importorskip("l2fast.export")
    export.export_model(path, tmp_path / "onnx", samples=500)
    import l2fast

    assert l2fast.validate_models(tmp_path / "onnx")["passed"] == 1
