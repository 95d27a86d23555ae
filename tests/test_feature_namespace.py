"""A member whose manifest names FinRL's stockstats features runs in the engine.

The engine resolves the manifest's ``feature_namespace = "stockstats"`` names
(l2fast.technical.names), has each symbol's technical state compute them as extras, and
gathers the member's observation from them: the values it feeds equal stockstats' own on
the same hourly bars, and the member's action equals its own onnxruntime session on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
stockstats = pytest.importorskip("stockstats")
pd = pytest.importorskip("pandas")

from test_engine import _rows  # noqa: E402
from test_ensemble import _toy_member  # noqa: E402

from l2fast.config import L2Config  # noqa: E402
from l2fast.engine.generator import TacticalSignalGenerator  # noqa: E402
from l2fast.errors import ModelLoadError  # noqa: E402
from l2fast.models.loading import load_model  # noqa: E402
from l2fast.signals import StrategicDecision  # noqa: E402

BTC = "BTC/USDT"
# FinRL 0.3.7's default INDICATORS and the close, as its StockTradingEnv reads them.
FINRL = ["close", "macd", "boll_ub", "boll_lb", "rsi_30", "cci_30", "dx_30", "close_30_sma", "close_60_sma"]
BARS = 6_000


def _finrl_member(models_copy: Path, features: list[str], timeframe: str | None = "1h", **manifest: object) -> None:
    _toy_member(models_copy, "finrl_agent", features, seed=3)
    path = models_copy / "finrl_agent.json"
    data = json.loads(path.read_text())
    data.update(feature_namespace="stockstats", feature_timeframe=timeframe, lookback=None, **manifest)
    path.write_text(json.dumps(data))


def _engine(models_copy: Path) -> TacticalSignalGenerator:
    weights = {**L2Config().model.weights, "finrl_agent": 1.0}
    config = L2Config.from_dict({"model": {"models_dir": str(models_copy), "weights": weights}})
    return TacticalSignalGenerator(config)


def test_a_stockstats_member_reads_stockstats_values_and_acts_as_its_own_session(models_copy, btc_1m) -> None:
    _finrl_member(models_copy, FINRL)
    gen = _engine(models_copy)
    names = [f"ss:{f}_1h" if f != "close" else "close_1h" for f in FINRL]
    assert gen.feature_names[-8:] == tuple(names[1:])  # the extras follow the fixed vector
    model = next(m for m in gen.ensemble.members if m.name == "finrl_agent")
    assert model.vector_names == tuple(names)
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate",
                                                universe=[BTC]))
    for row in _rows(btc_1m, 0, BARS):
        signal = gen.on_bar(BTC, *row)
    assert signal.reasoning["code"] != "WARM_UP"

    # stockstats on the hours the engine closed (the last hour is still forming).
    ts = btc_1m["ts"][:BARS]
    frame = pd.DataFrame({k: btc_1m[k][:BARS] for k in ("open", "high", "low", "close", "volume")},
                         index=pd.to_datetime(ts, unit="ms"))
    hours = frame.resample("1h", closed="left", label="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    closed = hours.iloc[:-1] if (ts[-1] // 60_000 + 1) % 60 else hours
    sdf = stockstats.StockDataFrame.retype(closed.reset_index(drop=True).copy())
    values = dict(zip(gen.feature_names, gen.features(BTC).tolist()))
    for name, vector_name in zip(FINRL, names):
        theirs = float(sdf[name].iloc[-1])
        scale = 100.0 if name.startswith(("rsi", "cci", "dx")) else abs(float(sdf["close"].iloc[-1]))
        assert values[vector_name] == pytest.approx(theirs, rel=1e-9, abs=1e-9 * scale), name

    # The member's observation is those values, in its manifest's order.
    obs = np.array([[values[n] for n in names]], dtype=np.float32)
    action = int(model.run(obs)["action"][0])
    assert signal.reasoning["vote"]["members"]["finrl_agent"]["target"] == model.action_targets[action]
    # Its warm-up is the slowest of its features: close_60_sma on 1h (61 hours).
    assert model.lookback == (60 + 1) * 60 - 1 == gen.warmup_bars


@pytest.mark.parametrize("features, timeframe, match", [
    (["rsi_30", "kdjk"], "1h", "not a stockstats name"),
    (["rsi_30"], None, "no timeframe"),
])
def test_a_manifest_with_a_name_l2fast_cannot_compute_is_refused_at_load(models_copy, features, timeframe,
                                                                         match) -> None:
    _finrl_member(models_copy, features, timeframe)
    with pytest.raises(ModelLoadError, match=match):
        load_model(models_copy / "finrl_agent.json")


def test_a_stockstats_feature_on_a_timeframe_the_engine_lacks_is_refused_naming_it(models_copy) -> None:
    _finrl_member(models_copy, ["rsi_30", "cci_30"], "4h")
    with pytest.raises(ModelLoadError, match="4h"):
        _engine(models_copy)


def test_an_engine_with_stockstats_extras_continues_bit_for_bit_from_its_snapshot(models_copy, btc_1m,
                                                                                  tmp_path) -> None:
    _finrl_member(models_copy, FINRL)
    gen = _engine(models_copy)
    gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.7, risk_appetite="moderate",
                                                universe=[BTC]))
    rows = _rows(btc_1m, 0, 5_000)
    for row in rows[:4_000]:
        gen.on_bar(BTC, *row)
    restored = TacticalSignalGenerator.restore(gen.snapshot(tmp_path / "s.l2snap"))
    assert restored.feature_names == gen.feature_names
    for row in rows[4_000:]:
        ours, theirs = gen.on_bar(BTC, *row), restored.on_bar(BTC, *row)
        assert ours.to_dict() == theirs.to_dict()
    np.testing.assert_array_equal(restored.features(BTC), gen.features(BTC))
