"""l2fast against FinRL 0.3.7 itself (issue 13, item 9): what the current code already reproduces.

The independent reference is FinRL, run as a FinRL user runs it by ``tests/finrl/reference.py``
in its own venv (the ``finrl_reference`` fixture, tests/conftest.py; the arrays are listed in
tests/finrl/README.md): its ``FeatureEngineer`` on the 1h bars pandas rolls up from our 1m
data, its ``StockTradingEnv``'s observations, and ``model.predict(obs, deterministic=True)``
of agents trained with its ``DRLAgent``. Pinned here:

- the engine's technical state, streamed the same 1m bars, closes the same hours pandas'
  ``resample`` forms and computes FinRL's eight default indicators on them as stockstats
  does, at every hour of 2022-2023;
- the exporter turns each recorded agent (PPO and SAC, bare and with VecNormalize folded in)
  into an ONNX model that acts as SB3's ``predict`` on FinRL's own observations.

The same agents run as engine members under FinRL's names: tests/test_finrl_engine.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from l2fast.config import TechnicalConfig
from l2fast.technical.names import resolve_features
from l2fast.technical.state import TechnicalState

# FinRL 0.3.7's finrl.config.INDICATORS, in its order (each scenario's params_json records it too).
INDICATORS = ["macd", "boll_ub", "boll_lb", "rsi_30", "cci_30", "dx_30", "close_30_sma", "close_60_sma"]
COLUMNS = ["close", *INDICATORS]
SETS = {"btc": ("BTC/USDT",), "btc_eth": ("BTC/USDT", "ETH/USDT")}
CASES = [(name, tic) for name, tics in SETS.items() for tic in tics]
AGENTS = ["ppo", "ppo_vecnorm", "sac", "sac_vecnorm"]
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

REL = 1e-9
# Absolute floors, as multiples of REL, for the values that cross zero. macd (EMA12 - EMA26 of
# prices) and the price-unit columns are sums and differences of prices: their rounding is
# relative to the price, so near macd's zero crossings (|macd| down to 1e-3 on the recording)
# the error scales with the hour's close, not with macd. rsi and dx lie in [0, 100]; cci is
# scaled by its 0.015 constant so that +-100 is its ordinary swing, and is exactly 0 where the
# typical price equals its 30-hour mean (it is, on the recording): 100 is their scale. Measured:
# everything within 5e-11 relative, cci within 5e-11 absolute.
OSCILLATORS = {"rsi_30", "cci_30", "dx_30"}


@dataclass(frozen=True)
class HourlyStream:
    """What the technical state reports at each 1h close of one ticker's 1m stream.

    Attributes:
        values: ``close_1h`` and the eight ``ss:*_1h`` features, one row per 1h close.
        close_ts: Open time of the 1m bar whose update reported the close.
        hours_closed: ``timeframe_bars("1h")`` right after that update.
    """

    values: np.ndarray
    close_ts: np.ndarray
    hours_closed: np.ndarray


_streams: dict[tuple[str, int, int], HourlyStream] = {}


def _ms(date: str) -> int:
    return int(np.datetime64(date, "ms").astype(np.int64))


def _stream(bars: dict[str, np.ndarray], tic: str, start: str, end: str) -> HourlyStream:
    """Stream ``bars`` in ``[start, end)`` bar by bar, as the engine does, reading every 1h close.

    Memoised per ticker and span: a ticker's indicators depend on its own rows only in FinRL
    (FeatureEngineer runs stockstats per ticker), so BTC's stream serves both sets.
    """
    key = (tic, _ms(start), _ms(end))
    if key in _streams:
        return _streams[key]
    config = TechnicalConfig(timeframes=("1m", "1h"))
    names, extras = resolve_features(INDICATORS, "stockstats", "1h")
    state = TechnicalState(config, extras)
    columns = [state.index[name] for name in ("close_1h", *names)]
    hour_bit = 1 << config.timeframes.index("1h")
    sel = (bars["ts"] >= key[1]) & (bars["ts"] < key[2])
    ts = bars["ts"][sel].tolist()
    o, h, lo, c, v = (bars[k][sel].tolist() for k in ("open", "high", "low", "close", "volume"))
    values, close_ts, hours_closed = [], [], []
    update, current = state.update, state.values
    for i, t in enumerate(ts):
        if update(t, o[i], h[i], lo[i], c[i], v[i]) & hour_bit:
            values.append(current[columns])
            close_ts.append(t)
            hours_closed.append(state.timeframe_bars("1h"))
    _streams[key] = HourlyStream(np.array(values), np.array(close_ts), np.array(hours_closed))
    return _streams[key]


def _finrl_rows(rec: dict[str, np.ndarray], tic: str) -> tuple[np.ndarray, np.ndarray]:
    """FinRL's frame rows of one ticker: (hour open times, ``close`` + INDICATORS columns)."""
    sel = rec["frame_tic"] == tic
    columns = list(rec["frame_columns"])
    return rec["frame_ts"][sel], rec["frame_values"][sel][:, [columns.index(c) for c in COLUMNS]]


@pytest.fixture
def bars(btc_1m: dict, eth_1m: dict) -> dict[str, dict[str, np.ndarray]]:
    """The real 1m bars by ticker (the files reference.py read; holdout/ is never read)."""
    return {"BTC/USDT": btc_1m, "ETH/USDT": eth_1m}


def _plain(finrl_reference, name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The scenario without turbulence: the whole span reference.py recorded (2022-2023 by default)."""
    return finrl_reference.scenario(f"{name}_plain"), finrl_reference.params(f"{name}_plain")


# ------------------------------------------------------------------------ FinRL's indicators


@pytest.mark.parametrize("name, tic", CASES)
def test_the_technical_state_closes_the_hours_pandas_rolls_up_for_finrl(finrl_reference, bars, name, tic) -> None:
    rec, params = _plain(finrl_reference, name)
    assert params["indicators"] == INDICATORS
    frame_ts, _ = _finrl_rows(rec, tic)
    got = _stream(bars[tic], tic, params["start"], params["end"])
    # One FinRL row per hour with at least one 1m bar (resample(closed="left", label="left"),
    # empty hours dropped), and exactly one hour closed per reported close, in order: the k-th
    # close is FinRL's k-th row.
    np.testing.assert_array_equal(got.hours_closed, np.arange(1, len(frame_ts) + 1))
    # An hour closes on its last minute's bar, except one whose last minutes are missing: it
    # closes on the first bar after the gap. In 2022-2023 that is 2023-03-24 12:00, the exchange
    # halt: 40 minutes, 13:00 has no bar, so FinRL's 12:00 row is known to the engine at 14:00.
    late = got.close_ts - frame_ts != 59 * MINUTE_MS
    assert frame_ts[late].tolist() == [_ms("2023-03-24T12:00")]
    assert got.close_ts[late].tolist() == [_ms("2023-03-24T14:00")]
    assert _ms("2023-03-24T13:00") not in frame_ts


@pytest.mark.parametrize("name, tic", CASES)
def test_stockstats_features_equal_finrls_feature_engineer_at_every_hour(finrl_reference, bars, name, tic) -> None:
    rec, params = _plain(finrl_reference, name)
    _, want = _finrl_rows(rec, tic)
    got = _stream(bars[tic], tic, params["start"], params["end"]).values
    assert got.shape == want.shape
    # From the ticker's second hour on. FinRL runs df.ffill().bfill() over the whole (date, tic)
    # frame after stockstats: the first hour's Bollinger bands (stockstats' sample std of one
    # value: NaN) become the NEXT row's, a look-ahead (and for ETH, BTC's bands). l2fast does
    # not copy it: its first bands are NaN; the other indicators already agree on that hour.
    first = np.isnan(got[0])
    assert [c for c, nan in zip(COLUMNS, first) if nan] == ["boll_ub", "boll_lb"]
    np.testing.assert_array_equal(got[0][~first], want[0][~first])
    close = want[1:, [0]]
    floor = np.array([100.0 if c in OSCILLATORS else np.nan for c in COLUMNS])
    scale = np.maximum(np.abs(want[1:]), np.where(np.isnan(floor), close, floor))
    err = np.abs(got[1:] - want[1:]) / scale
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= REL, (f"{COLUMNS[worst[1]]} at hour {worst[0] + 1}: l2fast {got[1:][worst]!r}, "
                              f"FinRL {want[1:][worst]!r}, {err.max():.3g} of its scale")


# ------------------------------------------------------------------------ exported agents


@pytest.fixture(scope="module")
def exported(finrl_reference, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Each recorded agent exported (VecNormalize folded in), loaded as the engine loads it.

    Exported in l2fast's name space under FinRL's state-layout labels (``cash``,
    ``close@BTC/USDT``, ...): that name space passes names through unresolved, so this is a
    parity-only export; the engine cannot run these models until it computes the account
    state and multi-asset features (issue 13, items 2 and 5).
    """
    pytest.importorskip("onnx")
    pytest.importorskip("stable_baselines3")
    from l2fast.export import export_model
    from l2fast.models.loading import load_model

    out = tmp_path_factory.mktemp("finrl_onnx")
    models: dict[str, object] = {}
    for name in SETS:
        layout = finrl_reference.params(f"{name}_plain")["state_layout"]
        for agent in AGENTS:
            zip_path = finrl_reference.path(f"models/{name}_{agent}.zip")
            vecnorm = finrl_reference.path(f"models/{name}_{agent}_vecnormalize.pkl") if "vecnorm" in agent else None
            export_model(zip_path, out, feature_names=layout, vecnormalize=vecnorm)
            models[f"{name}_{agent}"] = load_model(out / f"{name}_{agent}.json")
    return models


def _exporter_tolerance(want: np.ndarray, net_input: np.ndarray) -> np.ndarray:
    """The exporter's documented Box parity rule (l2fast/export/parity.py, README), for Box(-1, 1).

    ``1e-5 * max(1, |sb3|, (high - low) / 2) * max(1, max|x| / 10)`` per element, ``x`` the
    row the network sees (after VecNormalize): a plain 1e-5 while ``|x| <= 10``.
    """
    magnitude = np.abs(net_input.astype(np.float64)).max(axis=1, keepdims=True)
    return 1e-5 * np.maximum(1.0, np.abs(want)) * np.maximum(1.0, magnitude / 10.0)


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("agent", AGENTS)
def test_an_exported_finrl_agent_acts_as_sb3_predict_on_finrls_observations(finrl_reference, exported, name,
                                                                             agent) -> None:
    rec, params = _plain(finrl_reference, name)
    model = exported[f"{name}_{agent}"]
    env = params["env_kwargs"]
    assert model.observation_size == env["state_space"] and model.action_bounds[0].shape == (env["stock_dim"],)
    obs = rec["obs_float32"]  # float32(env.state), as DummyVecEnv hands it to the policy
    want = rec[f"predict__{agent}"].astype(np.float64)  # one predict call per observation
    net_input = rec[f"obs_normalized__{agent}"] if "vecnorm" in agent else obs
    if "vecnorm" in agent:
        assert np.abs(net_input).max() <= 10.0  # clip_obs: the rule is the plain 1e-5
    tolerance = _exporter_tolerance(want, net_input)
    batch = model.predict(obs).astype(np.float64)
    one_by_one = np.stack([model.act(row) for row in obs]).astype(np.float64)  # the engine's call
    for got in (batch, one_by_one):
        assert got.shape == want.shape and (np.abs(got) <= 1.0).all()
        ratio = np.abs(got - want) / tolerance
        assert ratio.max() <= 1.0, f"worst {np.abs(got - want).max():.3g} at step {np.argmax(ratio.max(axis=1))}"


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("agent", ["ppo", "sac"])
def test_an_agent_on_finrls_raw_observations_is_as_close_to_predict_as_sb3s_own_batch(finrl_reference, exported,
                                                                                       name, agent) -> None:
    # FinRL's StockTradingEnv feeds raw dollars (cash ~1e6): the exporter's rule above widens by
    # max|x| / 10 to ~1, vacuous for actions in [-1, 1], because float32 matrix products on such
    # inputs round differently with the summation order. SB3's own batched predict shows how
    # much: the exported model must stay within twice SB3's batch-vs-single difference (measured:
    # PPO 2.5e-5 both; SAC 9e-4 vs 7e-4 for BTC, 5e-4 both for BTC+ETH), or 1e-5.
    import stable_baselines3

    rec, _ = _plain(finrl_reference, name)
    obs = rec["obs_float32"]
    want = rec[f"predict__{agent}"]
    sb3 = getattr(stable_baselines3, agent.upper()).load(finrl_reference.path(f"models/{name}_{agent}.zip"),
                                                           device="cpu")
    sb3_batch = sb3.predict(obs, deterministic=True)[0]
    ours = exported[f"{name}_{agent}"].predict(obs)
    bound = max(2.0 * float(np.abs(sb3_batch - want).max()), 1e-5)
    assert float(np.abs(ours - want).max()) <= bound


def _finrl_names(name: str) -> list[str]:
    """FinRL's state layout in the issue's names: cash, closes, holdings, indicator-major blocks."""
    tics = SETS[name]
    if len(tics) == 1:
        return ["cash", "close_1h", "holdings", *(f"{i}_1h" for i in INDICATORS)]
    return ["cash", *(f"close_1h@{t}" for t in tics), *(f"holdings@{t}" for t in tics),
            *(f"{i}_1h@{t}" for i in INDICATORS for t in tics)]


@pytest.mark.parametrize("name", ["btc", "btc_eth"])
def test_a_finrl_agent_exports_under_finrls_state_layout_names(finrl_reference, name, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("stable_baselines3")
    from l2fast.export import export_model

    report = export_model(finrl_reference.path(f"models/{name}_ppo.zip"), tmp_path, feature_names=_finrl_names(name),
                          feature_namespace="stockstats")
    assert json.loads(report.manifest_path.read_text())["feature_names"] == _finrl_names(name)
