"""Faithful plain-library alternatives to ``TacticalSignalGenerator.on_bar`` for the engine benchmarks.

Both pipelines consume one 1-minute bar per ``on_bar(symbol, ts, open, high, low, close,
volume)`` and return the bar's signal as a plain dict (side, qty, confidence, consensus,
stop, take-profit, reasoning with the vote), having computed exactly the features the
shipped agents' manifests name, run the three agents and voted in Python:

* :class:`PlainLibraryPipeline` -- the best assembly of plain libraries: a Python
  resampler (:class:`alternatives.BucketAggregator`) feeding TA-Lib 0.8 streaming handles
  per timeframe (:class:`TalibFeatures`), ONE merged ONNX graph run through io_binding
  (:class:`MergedGraph`: every member's own nodes behind a ``Gather`` of its columns, the
  fastest way with onnx + onnxruntime alone) and :class:`PythonDecider`. It does not use
  :class:`l2fast.models.ensemble.FusedEnsemble`, whose stacking of same-shape members into one
  block-diagonal MLP is l2fast's own design, not a plain-library recipe.
* :class:`NaivePipeline` -- the notebook approach: the last :data:`NAIVE_WINDOW` 1-minute
  bars resampled with pandas and every feature recomputed with pandas + ``ta`` on each
  bar (:func:`pandas_ta_features`), then stable-baselines3 ``predict`` once per agent on
  the scaled observation, then the same :class:`PythonDecider`.

Differences from ours, all in the alternatives' favour unless noted:

* No bar validation, one symbol, no cross-symbol correlation, no handling of a failed
  or non-finite model run.
* Features: only the ones the manifests name (ours computes every indicator, candlestick
  pattern and support/resistance level on every timeframe). TA-Lib covers all of them
  but ``sr_breakout``, which ours derives from a decaying table of swing-pivot levels
  with volume confirmation; here it is approximated by a plain channel breakout (+1 when
  the close is above the previous bar's 20-bar Donchian high, -1 below its low, else 0).
  The volatility agent, which reads it, may therefore act differently on some bars.
* Voting: the same formulas and parameters as :mod:`l2fast.decision.voting` (member targets and
  confidences, regime multipliers, fused score, consensus, confidence and alignment
  gates), but each timeframe's technical vote uses only the components its computed
  features allow (RSI level, MACD cross and histogram, %B, the breakout
  approximation): no RSI divergence, Bollinger squeeze or candlestick patterns.
* Sizing and risk: Kelly fraction times volatility target, L3's exposure and appetite and
  the confidence, capped by the position limit; ATR stop and take-profit, loss-per-trade
  and exposure caps, daily trade count and daily loss halt; breakeven and trailing stop
  on an open position. No risk parity, correlation scaling or live trade statistics.
* The signal is a dict, not a validated frozen :class:`~l2fast.signals.TacticalSignal`.

The naive pipeline's EMA-type features (RSI, MACD, ATR, ADX) restart from the window's
first bar on every recompute, so on the slow timeframes they differ from the streamed
values (the windowed ones, and every 1m and 5m feature, agree).
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from alternatives import BucketAggregator

from l2fast.config import L2Config, TechnicalConfig
from l2fast.models.loading import LoadedModel, session_options
from l2fast.models.manifest import INPUT_NAME

NAN = math.nan
MINUTE_MS = 60_000
MINUTES_PER_YEAR = 365 * 24 * 60
TIMEFRAME_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}
#: 1-minute bars the naive pipeline recomputes over: the agents' longest lookback (2100,
#: the 1h MACD's 34 hourly bars) plus five hours of margin.
NAIVE_WINDOW = 2400
# l2fast.decision.voting's defaults: dead band, confidence weights, RSI and %B levels.
DEAD_BAND = 0.05
CONFIDENCE_WEIGHTS = (0.5, 0.25, 0.25)
RSI_OVERSOLD, RSI_OVERBOUGHT = 30.0, 70.0
PCTB_LOW, PCTB_HIGH = 0.0, 1.0
SIDES = {1: "buy", -1: "sell", 0: "hold"}


def split_feature(name: str) -> tuple[str, str]:
    """``"rsi_14_1h"`` -> ``("rsi_14", "1h")``."""
    base, _, tf = name.rpartition("_")
    return base, tf


def needed_features(models: Sequence[LoadedModel]) -> tuple[str, ...]:
    """Every feature some member reads, each once, in first-use order."""
    return tuple(dict.fromkeys(name for m in models for name in m.feature_names))


def _position(x: float, lower: float, upper: float) -> float:
    # As the technical core: 0.5 in a zero-width channel, NaN while warming up.
    width = upper - lower
    if width > 0.0:
        return (x - lower) / width
    return 0.5 if width == 0.0 else NAN


def _sgn(x: float, band: float = DEAD_BAND) -> int:
    return 1 if x > band else (-1 if x < -band else 0)


# ------------------------------------------------------------------ TA-Lib streaming


class TalibTimeframe:
    """The features one timeframe must provide, from TA-Lib streaming handles.

    A handle opens on history as soon as that history is long enough (``lookback + 1``
    bars, which TA-Lib reports with ``InsufficientHistory``); until every handle is open
    the timeframe keeps its bars, then drops them.

    Args:
        bases: Feature base names wanted on this timeframe (e.g. ``"rsi_14"``).
        minutes: Bar length (annualises the realized volatility).
        tech: Indicator periods.
        row: The shared feature vector; ``columns[base]`` is each base's slot in it.
        columns: Slot of each wanted base.
    """

    # Feature base -> the handle groups it needs.
    _GROUPS = {
        "macd_hist_pct": ("macd",), "bb_pctb": ("bb",), "bb_width": ("bb",), "atr_pct": ("atr",),
        "stoch_k": ("stoch",), "stoch_d": ("stoch",), "vol_z": ("vol_sma", "vol_sd"),
        "rvol": ("ret_sd",), "donchian_pos": ("donchian",), "sr_breakout": ("donchian",),
    }

    def __init__(self, bases: Sequence[str], minutes: int, tech: TechnicalConfig, row: np.ndarray,
                 columns: Mapping[str, int]) -> None:
        import talib
        from talib import stream

        self._insufficient = talib.InsufficientHistory
        adx, vz = tech.adx_period, tech.volume_z_period
        rv, dc = tech.realized_vol_period, tech.donchian_period
        fk, sk, sd = tech.stoch
        # group -> (stream factory, inputs: "c", "hlc", "v", "r" (log return) or "hl"; kwargs)
        specs: dict[str, tuple[Any, str, dict]] = {
            "macd": (stream.MACD, "c", dict(fastperiod=tech.macd[0], slowperiod=tech.macd[1],
                                            signalperiod=tech.macd[2])),
            "bb": (stream.BBANDS, "c", dict(timeperiod=tech.bb_period, nbdevup=tech.bb_std,
                                            nbdevdn=tech.bb_std, matype=0)),
            "atr": (stream.ATR, "hlc", dict(timeperiod=tech.atr_period)),
            "stoch": (stream.STOCH, "hlc", dict(fastk_period=fk, slowk_period=sk, slowk_matype=0,
                                                slowd_period=sd, slowd_matype=0)),
            "adx": (stream.ADX, "hlc", dict(timeperiod=adx)),
            "plus_di": (stream.PLUS_DI, "hlc", dict(timeperiod=adx)),
            "minus_di": (stream.MINUS_DI, "hlc", dict(timeperiod=adx)),
            "vol_sma": (stream.SMA, "v", dict(timeperiod=vz)),
            "vol_sd": (stream.STDDEV, "v", dict(timeperiod=vz, nbdev=1.0)),
            "ret_sd": (stream.STDDEV, "r", dict(timeperiod=rv, nbdev=1.0)),
            "donchian": (stream.DONCHIAN, "hl", dict(timeperiod=dc)),
        }
        renamed = {f"adx_{adx}": "adx", f"plus_di_{adx}": "plus_di", f"minus_di_{adx}": "minus_di",
                   f"vol_z_{vz}": "vol_z", f"rvol_{rv}": "rvol", f"donchian_pos_{dc}": "donchian_pos"}
        self.bases = tuple(renamed.get(b, b) for b in bases)
        groups: dict[str, tuple[Any, str, dict]] = {}
        for base in self.bases:
            if base.startswith("rsi_"):
                groups[base] = (stream.RSI, "c", dict(timeperiod=int(base[4:])))
            elif base in ("adx", "plus_di", "minus_di"):
                groups[base] = specs[base]
            elif base in self._GROUPS:
                groups.update((g, specs[g]) for g in self._GROUPS[base])
            elif base not in ("ret_1", "ret_5"):
                raise ValueError(f"no plain-library recipe for feature base {base!r}")
        self._pending = groups
        self._history: dict[str, list[float]] = {k: [] for k in "hlcvr"}
        self.handles: dict[str, Any] = {}
        self._rsi = [(b, None) for b in self.bases if b.startswith("rsi_")]
        self._macd = self._bb = self._atr = self._stoch = self._adx = self._pdi = self._mdi = None
        self._vol_sma = self._vol_sd = self._ret_sd = self._donchian = None
        self._rvol_scale = math.sqrt(rv / (rv - 1)) * math.sqrt(MINUTES_PER_YEAR / minutes)
        self._closes: deque[float] = deque(maxlen=6)
        self._row = row
        self._slots = tuple((b, columns[orig]) for b, orig in zip(self.bases, bases))
        self._don_prev = (NAN, NAN)

    def _open_pending(self) -> set[str]:
        """Open every handle whose history is now long enough (warm-up only); returns them."""
        hist = {k: np.array(v) for k, v in self._history.items()}
        opened = set()
        for group, (factory, inputs, kwargs) in list(self._pending.items()):
            try:
                self.handles[group] = factory(*(hist[k] for k in inputs), **kwargs)
            except self._insufficient:
                continue
            opened.add(group)
            del self._pending[group]
        h = self.handles.get
        self._rsi = [(b, h(b)) for b, _ in self._rsi]
        self._macd, self._bb, self._atr, self._stoch = h("macd"), h("bb"), h("atr"), h("stoch")
        self._adx, self._pdi, self._mdi = h("adx"), h("plus_di"), h("minus_di")
        self._vol_sma, self._vol_sd = h("vol_sma"), h("vol_sd")
        self._ret_sd, self._donchian = h("ret_sd"), h("donchian")
        if not self._pending:
            self._history = None
        return opened

    def update(self, h: float, l: float, c: float, v: float) -> None:
        """Consume one closed bar of this timeframe and write its features into the row."""
        closes = self._closes
        r = math.log(c / closes[-1]) if closes else NAN
        closes.append(c)
        # A handle opened on the history ending with this bar already holds this bar's value.
        fresh: set[str] | tuple = ()
        if self._pending:
            for k, x in zip("hlcvr", (h, l, c, v, r)):
                self._history[k].append(x)
            fresh = self._open_pending()
        out: dict[str, float] = {"ret_1": r, "ret_5": math.log(c / closes[0]) if len(closes) == 6 else NAN}
        for base, hd in self._rsi:
            if hd is not None:
                out[base] = hd.value if base in fresh else hd.update(c)
        if (hd := self._macd) is not None:
            out["macd_hist_pct"] = (hd.value if "macd" in fresh else hd.update(c))[2] / c
        if (hd := self._bb) is not None:
            upper, middle, lower = hd.value if "bb" in fresh else hd.update(c)
            out["bb_pctb"] = _position(c, lower, upper)
            out["bb_width"] = (upper - lower) / middle
        if (hd := self._atr) is not None:
            out["atr_pct"] = (hd.value if "atr" in fresh else hd.update(h, l, c)) / c
        if (hd := self._stoch) is not None:
            out["stoch_k"], out["stoch_d"] = hd.value if "stoch" in fresh else hd.update(h, l, c)
        if (hd := self._adx) is not None:
            out["adx"] = hd.value if "adx" in fresh else hd.update(h, l, c)
        if (hd := self._pdi) is not None:
            out["plus_di"] = hd.value if "plus_di" in fresh else hd.update(h, l, c)
        if (hd := self._mdi) is not None:
            out["minus_di"] = hd.value if "minus_di" in fresh else hd.update(h, l, c)
        if self._vol_sma is not None and self._vol_sd is not None:
            mean = self._vol_sma.value if "vol_sma" in fresh else self._vol_sma.update(v)
            sd = self._vol_sd.value if "vol_sd" in fresh else self._vol_sd.update(v)
            out["vol_z"] = (v - mean) / sd if sd > 0.0 else 0.0
        if (hd := self._ret_sd) is not None:
            out["rvol"] = (hd.value if "ret_sd" in fresh else hd.update(r)) * self._rvol_scale
        if (hd := self._donchian) is not None:
            upper, _, lower = hd.value if "donchian" in fresh else hd.update(h, l)
            out["donchian_pos"] = _position(c, lower, upper)
            prev_upper, prev_lower = self._don_prev
            out["sr_breakout"] = 1.0 if c > prev_upper else (-1.0 if c < prev_lower else 0.0)
            self._don_prev = (upper, lower)
        row = self._row
        for base, col in self._slots:
            row[col] = out.get(base, NAN)


class TalibFeatures:
    """The manifests' features on 1m/5m/15m/1h: Python resampler + TA-Lib streaming handles.

    Args:
        names: Feature names (``<base>_<tf>``), the columns of :attr:`row`.
        tech: Indicator periods.

    Attributes:
        row: float64 feature vector, updated in place by :meth:`update`.
        updated: Per bar, the timeframes whose bar closed (in ``TIMEFRAME_MINUTES`` order).
    """

    def __init__(self, names: Sequence[str], tech: TechnicalConfig) -> None:
        self.names = tuple(names)
        self.row = np.full(len(self.names), NAN)
        by_tf: dict[str, dict[str, int]] = {tf: {} for tf in TIMEFRAME_MINUTES}
        for col, name in enumerate(self.names):
            base, tf = split_feature(name)
            by_tf[tf][base] = col
        self.timeframes = tuple(tf for tf in TIMEFRAME_MINUTES if by_tf[tf])
        self._blocks = [TalibTimeframe(list(by_tf[tf]), TIMEFRAME_MINUTES[tf], tech, self.row, by_tf[tf])
                        for tf in self.timeframes]
        self._first = self._blocks[0] if self.timeframes[0] == "1m" else None
        self._aggs = [(tf, block, BucketAggregator(TIMEFRAME_MINUTES[tf]))
                      for tf, block in zip(self.timeframes, self._blocks) if tf != "1m"]
        self.updated: list[str] = []

    def update(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> list[str]:
        """Consume one 1-minute bar; returns the timeframes whose bar closed."""
        updated = self.updated
        updated.clear()
        if self._first is not None:
            self._first.update(h, l, c, v)
            updated.append("1m")
        for tf, block, agg in self._aggs:
            for bar in agg.step(ts, o, h, l, c, v):
                block.update(bar[1], bar[2], bar[3], bar[4])
                updated.append(tf)
        return updated


# ------------------------------------------------------------------ merged ONNX graph


class MergedGraph:
    """Every member in one onnxruntime session, built with onnx's own helpers, run through io_binding.

    The graph has one input ``features`` float32 ``[1, F]``; each member's nodes, prefixed
    ``<name>/`` by ``onnx.compose.add_prefix``, read a ``Gather`` of its columns. Input and
    outputs are numpy buffers bound once, so :meth:`run` copies F numbers in and runs.

    Args:
        models: The members (their ONNX files, feature names, names).
        names: The shared feature vector's names.
    """

    def __init__(self, models: Sequence[LoadedModel], names: Sequence[str]) -> None:
        import onnx
        import onnx.compose
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        index = {n: i for i, n in enumerate(names)}
        protos = [onnx.load(str(m.onnx_path)) for m in models]
        if len({(p.ir_version, tuple((o.domain, o.version) for o in p.opset_import)) for p in protos}) != 1:
            raise ValueError("members on different ONNX opsets: this simple merge needs one")
        nodes, initializers, outputs = [], [], []
        for model, proto in zip(models, protos):
            proto = onnx.compose.add_prefix(proto, f"{model.name}/")
            cols = np.array([index[f] for f in model.feature_names], dtype=np.int64)
            initializers.append(numpy_helper.from_array(cols, f"{model.name}/columns"))
            nodes.append(helper.make_node("Gather", ["features", f"{model.name}/columns"],
                                          [f"{model.name}/{INPUT_NAME}"], axis=1))
            nodes.extend(proto.graph.node)
            initializers.extend(proto.graph.initializer)
            outputs.extend(proto.graph.output)
        graph = helper.make_graph(
            nodes, "merged", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, len(names)])],
            outputs, initializer=initializers)
        merged = helper.make_model(graph, opset_imports=protos[0].opset_import)
        merged.ir_version = protos[0].ir_version
        self.session = ort.InferenceSession(merged.SerializeToString(), sess_options=session_options(),
                                            providers=["CPUExecutionProvider"])
        self._row = np.zeros((1, len(names)), dtype=np.float32)
        self._binding = self.session.io_binding()
        self._binding.bind_ortvalue_input("features", ort.OrtValue.ortvalue_from_numpy(self._row))
        self.outputs: dict[str, np.ndarray] = {}
        dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
        for out in self.session.get_outputs():
            buf = np.zeros([1] + [int(d) for d in out.shape[1:]], dtype=dtypes[out.type])
            self._binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(buf))
            self.outputs[out.name] = buf

    def run(self, row: np.ndarray) -> dict[str, np.ndarray]:
        """Every member on one float64 feature vector; the returned buffers are reused."""
        self._row[0] = row
        self.session.run_with_iobinding(self._binding)
        return self.outputs


# ------------------------------------------------------------------ pandas + ta


def _resample(frame: Any, minutes: int) -> Any:
    """Closed ``minutes`` bars of a 1-minute frame (a trailing incomplete bucket dropped)."""
    if minutes == 1:
        return frame
    bars = frame.resample(f"{minutes}min", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    last_minute = frame.index[-1]
    if (last_minute.value // 1_000_000 // MINUTE_MS + 1) % minutes:
        bars = bars.iloc[:-1]
    return bars


def pandas_ta_features(frame: Any, minutes: int, bases: Sequence[str],
                       tech: TechnicalConfig) -> dict[str, float]:
    """The wanted features of the last closed bar, recomputed with pandas + ``ta`` over ``frame``.

    Args:
        frame: The timeframe's bars (columns open/high/low/close/volume), oldest first.
        minutes: Bar length.
        bases: Feature base names (``"rsi_14"``, ``"adx_14"``...).
        tech: Indicator periods.
    """
    from ta.momentum import RSIIndicator, StochasticOscillator
    from ta.trend import MACD, ADXIndicator
    from ta.volatility import AverageTrueRange, BollingerBands

    c, h, l, v = frame["close"], frame["high"], frame["low"], frame["volume"]
    last = c.iloc[-1]
    out: dict[str, float] = {}
    adx = stoch = bb = None
    for base in bases:
        if base.startswith("rsi_"):
            out[base] = RSIIndicator(c, window=int(base[4:])).rsi().iloc[-1]
        elif base == "macd_hist_pct":
            fast, slow, signal = tech.macd
            macd = MACD(c, window_slow=slow, window_fast=fast, window_sign=signal)
            out[base] = macd.macd_diff().iloc[-1] / last
        elif base in ("bb_pctb", "bb_width"):
            bb = bb or BollingerBands(c, window=tech.bb_period, window_dev=tech.bb_std)
            upper, middle, lower = (bb.bollinger_hband().iloc[-1], bb.bollinger_mavg().iloc[-1],
                                    bb.bollinger_lband().iloc[-1])
            out[base] = _position(last, lower, upper) if base == "bb_pctb" else (upper - lower) / middle
        elif base == "atr_pct":
            out[base] = AverageTrueRange(h, l, c, window=tech.atr_period).average_true_range().iloc[-1] / last
        elif base in ("stoch_k", "stoch_d"):
            # ta's %K is TA-Lib's fast %K and its signal the slow %K; slow %D smooths it again.
            stoch = stoch if stoch is not None else StochasticOscillator(
                h, l, c, window=tech.stoch[0], smooth_window=tech.stoch[1]).stoch_signal()
            out[base] = stoch.iloc[-1] if base == "stoch_k" else stoch.rolling(tech.stoch[2]).mean().iloc[-1]
        elif base.startswith(("adx_", "plus_di_", "minus_di_")):
            adx = adx or ADXIndicator(h, l, c, window=tech.adx_period)
            series = adx.adx() if base.startswith("adx_") else (
                adx.adx_pos() if base.startswith("plus") else adx.adx_neg())
            out[base] = series.iloc[-1]
        elif base.startswith("vol_z_"):
            window = v.rolling(tech.volume_z_period)
            sd = window.std(ddof=0).iloc[-1]
            out[base] = (v.iloc[-1] - window.mean().iloc[-1]) / sd if sd > 0 else 0.0
        elif base.startswith("rvol_"):
            ret = np.log(c).diff()
            scale = math.sqrt(MINUTES_PER_YEAR / minutes)
            out[base] = ret.rolling(tech.realized_vol_period).std().iloc[-1] * scale
        elif base.startswith("donchian_pos_"):
            n = tech.donchian_period
            out[base] = _position(last, l.rolling(n).min().iloc[-1], h.rolling(n).max().iloc[-1])
        elif base == "sr_breakout":
            n = tech.donchian_period
            upper, lower = h.rolling(n).max().shift(1).iloc[-1], l.rolling(n).min().shift(1).iloc[-1]
            out[base] = 1.0 if last > upper else (-1.0 if last < lower else 0.0)
        elif base in ("ret_1", "ret_5"):
            lag = int(base[4:])
            out[base] = float(np.log(c / c.shift(lag)).iloc[-1])
        else:
            raise ValueError(f"no pandas+ta recipe for feature base {base!r}")
    return out


# ------------------------------------------------------------------ vote, size, risk


class PythonDecider:
    """Vote, size and risk-check one bar in plain Python (module docstring for the rules).

    Args:
        config: The engine configuration (weights, regime multipliers, thresholds, risk).
        manifests: Each member's manifest, by name.
        names: The feature vector's names (the technical votes read it).
    """

    def __init__(self, config: L2Config, manifests: Mapping[str, Mapping[str, Any]],
                 names: Sequence[str]) -> None:
        self.config = config
        self.model = config.model
        self.risk = config.risk
        self.members = tuple(self.model.weights)
        self.targets = {n: tuple(manifests[n]["action_targets"]) for n in self.members}
        self.manifests = manifests
        index = {name: i for i, name in enumerate(names)}
        tech = config.technical
        rsi = f"rsi_{tech.rsi_periods[0]}"
        bases = (rsi, "macd_hist_pct", "bb_pctb", "sr_breakout")
        self.tf_columns = {tf: tuple(index.get(f"{b}_{tf}", -1) for b in bases) for tf in TIMEFRAME_MINUTES}
        self.tf_votes = dict.fromkeys(TIMEFRAME_MINUTES, NAN)
        self._prev_hist = dict.fromkeys(TIMEFRAME_MINUTES, NAN)
        self.decision: Any = None
        self.multipliers = (1.0,) * len(self.members)
        self.kelly = 0.0
        self.appetite = 1.0
        self.equity = config.engine.initial_equity
        self.position: dict[str, Any] | None = None
        self.day = -1
        self.entries_today = 0
        self.day_start_equity = self.equity
        self.halted = False

    def on_decision(self, decision: Any) -> None:
        """Install L3's decision: regime multipliers and the Kelly inputs of that regime."""
        self.decision = decision
        row = self.model.regime_multipliers[decision.regime]
        self.multipliers = tuple(row[n] for n in self.members)
        if self.risk.kelly_win_rate is not None:
            p, b = self.risk.kelly_win_rate, self.risk.kelly_payoff_ratio
        else:
            weights = self.model.effective_weights(decision.regime)
            p = sum(w * self.manifests[n]["performance_metrics"]["win_rate"] for n, w in weights.items())
            b = sum(w * self.manifests[n]["performance_metrics"]["payoff_ratio"] for n, w in weights.items())
        self.kelly = max(0.0, min(1.0, p - (1 - p) / b)) if b > 0 else 0.0
        self.appetite = self.risk.risk_appetite_multipliers[decision.risk_appetite]

    def technical(self, tf: str, row: Sequence[float]) -> None:
        """Advance the technical vote of ``tf``, whose bar just closed."""
        rsi_col, hist_col, pctb_col, sr_col = self.tf_columns[tf]
        parts = []
        rsi = row[rsi_col] if rsi_col >= 0 else NAN
        if rsi == rsi:
            parts.append(1.0 if rsi < RSI_OVERSOLD else (-1.0 if rsi > RSI_OVERBOUGHT else 0.0))
        if hist_col >= 0:
            hist, prev = row[hist_col], self._prev_hist[tf]
            if hist == hist and prev == prev:
                parts.append(1.0 if prev <= 0 < hist else (-1.0 if prev >= 0 > hist else 0.0))
                slope = hist - prev
                parts.append(((1.0 if hist > 0 else (-1.0 if hist < 0 else 0.0))
                              + (1.0 if slope > 0 else (-1.0 if slope < 0 else 0.0))) / 2)
            self._prev_hist[tf] = hist
        pctb = row[pctb_col] if pctb_col >= 0 else NAN
        if pctb == pctb:
            parts.append(1.0 if pctb < PCTB_LOW else (-1.0 if pctb > PCTB_HIGH else 0.0))
        sr = row[sr_col] if sr_col >= 0 else NAN
        if sr == sr:
            parts.append(sr)
        self.tf_votes[tf] = sum(parts) / len(parts) if parts else NAN

    def _roll_day(self, ts: int) -> None:
        day = ts // 86_400_000
        if day != self.day:
            self.day, self.entries_today, self.halted = day, 0, False
            self.day_start_equity = self.equity

    def _mark_position(self, h: float, l: float, c: float, atr: float) -> dict | None:
        # Breakeven, then trailing: the stop only moves in the position's favour.
        pos = self.position
        if pos is None:
            return None
        s = pos["side"]
        pos["best"] = max(pos["best"], h) if s > 0 else min(pos["best"], l)
        profit = s * (pos["best"] - pos["entry"])
        if not pos["breakeven"] and profit >= self.risk.breakeven_threshold * pos["r"]:
            pos["breakeven"] = True
            pos["stop"] = pos["entry"] if s * (pos["entry"] - pos["stop"]) > 0 else pos["stop"]
        trail = self.risk.trailing_atr_multiplier
        if pos["breakeven"] and trail is not None and atr == atr:
            level = pos["best"] - s * trail * atr
            if s * (level - pos["stop"]) > 0:
                pos["stop"] = level
        self.equity = pos["cash"] + s * pos["qty"] * c
        return pos

    def decide(self, symbol: str, ts: int, h: float, l: float, c: float, atr: float, vol: float,
               members: Sequence[tuple[int, float]]) -> dict[str, Any]:
        """The signal of one bar from the members' ``(action, probability of it)``."""
        self._roll_day(ts)
        pos = self._mark_position(h, l, c, atr)
        if self.equity <= self.day_start_equity * (1 - self.risk.daily_loss_limit):
            self.halted = True
        model = self.model
        raw, votes = [], {}
        for name, mult, (action, prob) in zip(self.members, self.multipliers, members):
            target = self.targets[name][action]
            votes[name] = {"side": _sgn(target), "target": target, "confidence": min(max(prob, 0.0), 1.0)}
            raw.append(model.weights[name] * mult)
        total = sum(raw)
        # Every timeframe weighs 1, as l2fast.decision.voting's default timeframe_weights.
        live = [v for v in self.tf_votes.values() if v == v]
        tech = sum(live) / len(live) if live else 0.0
        m_score = sum(r * votes[n]["target"] for r, n in zip(raw, self.members)) / total
        score = (1 - model.technical_weight) * m_score + model.technical_weight * tech
        direction = _sgn(score)
        agree = [(r, votes[n]) for r, n in zip(raw, self.members) if votes[n]["side"] == direction]
        a = sum(r for r, _ in agree)
        consensus = a / total
        model_conf = sum(r * v["confidence"] for r, v in agree) / a if a > 0 else 0.0
        alignment = sum(1 for v in live if _sgn(v) == direction) / len(live) if live else 0.0
        gm, gt, ga = CONFIDENCE_WEIGHTS
        confidence = (gm * model_conf + gt * (1 + direction * tech) / 2 + ga * alignment) / (gm + gt + ga)
        vote = {"direction": SIDES[direction], "score": score, "model_score": m_score,
                "technical_score": tech, "consensus": consensus, "confidence": confidence,
                "alignment": alignment, "members": votes, "timeframes": dict(self.tf_votes)}
        reasoning: dict[str, Any] = {"code": None, "regime": self.decision.regime, "vote": vote}
        if direction == 0:
            return self._hold(symbol, ts, reasoning, "NO_DIRECTION", pos)
        for gate, value, threshold in (("LOW_CONSENSUS", consensus, model.consensus_threshold),
                                       ("LOW_CONFIDENCE", confidence, model.confidence_threshold),
                                       ("LOW_ALIGNMENT", alignment, model.alignment_threshold)):
            if value < threshold - 1e-9:
                return self._hold(symbol, ts, reasoning, gate, pos)
        if pos is not None and pos["side"] == -direction:
            reasoning["code"] = "EXIT"
            return self._signal(symbol, ts, direction, pos["qty"], confidence, consensus, None, None,
                                reasoning)
        if pos is not None:
            return self._hold(symbol, ts, reasoning, "POSITION_OPEN", pos)
        return self._enter(symbol, ts, direction, c, atr, vol, confidence, consensus, reasoning)

    def _enter(self, symbol: str, ts: int, side: int, price: float, atr: float, vol: float,
               confidence: float, consensus: float, reasoning: dict) -> dict[str, Any]:
        risk, d = self.risk, self.decision
        if symbol not in d.universe:
            return self._hold(symbol, ts, reasoning, "NOT_IN_UNIVERSE", None)
        if vol != vol:
            return self._hold(symbol, ts, reasoning, "VOL_UNKNOWN", None)
        if self.kelly == 0.0:
            return self._hold(symbol, ts, reasoning, "NO_EDGE", None)
        floor = risk.volatility_target / risk.max_vol_scale
        conf = confidence if risk.confidence_scaling else 1.0
        fraction = min(risk.kelly_fraction * self.kelly * risk.volatility_target / max(vol, floor)
                       * d.target_exposure * self.appetite * conf, risk.max_position_size)
        qty = fraction * self.equity / price
        reasoning["sizing"] = {"fraction": fraction, "qty": qty}
        if side < 0 and not risk.allow_short:
            return self._hold(symbol, ts, reasoning, "SHORT_NOT_ALLOWED", None)
        if self.halted:
            return self._hold(symbol, ts, reasoning, "DAILY_LOSS_LIMIT", None)
        if self.entries_today >= risk.max_daily_trades:
            return self._hold(symbol, ts, reasoning, "MAX_DAILY_TRADES", None)
        r = risk.atr_multiplier * atr
        stop, take_profit = price - side * r, price + side * risk.take_profit_r * r
        if not (r > 0 and stop > 0 and take_profit > 0):
            return self._hold(symbol, ts, reasoning, "INVALID_STOP", None)
        qty = min(qty, risk.max_loss_per_trade * self.equity / r, risk.exposure_limit * self.equity / price)
        qty = math.floor(qty / risk.lot_step) * risk.lot_step
        if qty * price < risk.min_notional:
            return self._hold(symbol, ts, reasoning, "BELOW_MIN_NOTIONAL", None)
        self.entries_today += 1
        reasoning["code"] = "ENTRY"
        return self._signal(symbol, ts, side, qty, confidence, consensus, stop, take_profit, reasoning)

    def on_fill(self, side: int, qty: float, price: float, atr: float) -> None:
        """Book L1's execution of the last signal (opens, or closes the whole position)."""
        if self.position is not None:
            pos = self.position
            self.equity = pos["cash"] + pos["side"] * pos["qty"] * price
            self.position = None
            return
        r = self.risk.atr_multiplier * atr
        self.position = {"side": side, "qty": qty, "entry": price, "r": r, "best": price, "breakeven": False,
                         "stop": price - side * r, "take_profit": price + side * self.risk.take_profit_r * r,
                         "cash": self.equity - side * qty * price}

    def _hold(self, symbol: str, ts: int, reasoning: dict, code: str, pos: dict | None) -> dict[str, Any]:
        reasoning["code"] = code
        stop = tp = None
        if pos is not None:
            stop, tp = pos["stop"], pos["take_profit"]
            reasoning["position"] = dict(pos)
        vote = reasoning.get("vote") or {}
        return self._signal(symbol, ts, 0, 0.0, vote.get("confidence", 0.0), vote.get("consensus", 0.0),
                            stop, tp, reasoning)

    @staticmethod
    def _signal(symbol: str, ts: int, side: int, qty: float, confidence: float, consensus: float,
                stop: float | None, take_profit: float | None, reasoning: dict) -> dict[str, Any]:
        return {"symbol": symbol, "side": SIDES[side], "qty": qty,
                "confidence": min(max(confidence, 0.0), 1.0), "consensus": min(max(consensus, 0.0), 1.0),
                "stop_loss": stop, "take_profit": take_profit, "reasoning": reasoning, "ts_ms": ts}


def hold_signal(symbol: str, ts: int, code: str) -> dict[str, Any]:
    """A hold before any vote (no decision yet, or warming up)."""
    return PythonDecider._signal(symbol, ts, 0, 0.0, 0.0, 0.0, None, None, {"code": code})


# ------------------------------------------------------------------ the pipelines


class PlainLibraryPipeline:
    """TA-Lib streaming features + one fused ONNX run + Python vote/size/risk, per 1m bar.

    Args:
        models: The shipped members (loaded manifests + ONNX).
        config: The engine configuration (defaults if None).
    """

    def __init__(self, models: Sequence[LoadedModel], config: L2Config | None = None) -> None:
        config = config or L2Config()
        self.names = needed_features(models)
        self.features = TalibFeatures(self.names, config.technical)
        self.ensemble = MergedGraph(models, self.names)
        self.decider = PythonDecider(config, {m.name: m.manifest for m in models}, self.names)
        self.warmup = max(int(m.manifest.get("lookback", 0)) for m in models)
        self.bars = 0
        atr, rvol = "atr_pct_1m", f"rvol_{config.technical.realized_vol_period}_1m"
        self._atr_col, self._vol_col = self.names.index(atr), self.names.index(rvol)
        self._outputs = [(f"{n}/action", f"{n}/probs") for n in self.decider.members]

    def on_decision(self, decision: Any) -> None:
        self.decider.on_decision(decision)

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float,
               v: float) -> dict[str, Any]:
        """The signal of one closed 1-minute bar."""
        row = self.features.row
        decider = self.decider
        for tf in self.features.update(ts, o, h, l, c, v):
            decider.technical(tf, row)
        self.bars += 1
        if decider.decision is None:
            return hold_signal(symbol, ts, "NO_DECISION")
        if self.bars < self.warmup:
            return hold_signal(symbol, ts, "WARM_UP")
        out = self.ensemble.run(row)
        members = []
        for action_name, probs_name in self._outputs:
            a = int(out[action_name][0])
            members.append((a, float(out[probs_name][0, a])))
        return decider.decide(symbol, ts, h, l, c, row[self._atr_col] * c, row[self._vol_col], members)


class NaivePipeline:
    """pandas + ``ta`` recompute over the last :data:`NAIVE_WINDOW` bars + SB3 ``predict`` x3.

    Args:
        bundles: ``(name, SB3 algorithm, fitted scaler, feature names)`` per member.
        manifests: Each member's manifest, by name (action targets, Kelly inputs).
        config: The engine configuration (defaults if None).
    """

    def __init__(self, bundles: Sequence[tuple[str, Any, Any, Sequence[str]]],
                 manifests: Mapping[str, Mapping[str, Any]], config: L2Config | None = None) -> None:
        import pandas as pd

        config = config or L2Config()
        self._pd = pd
        self.tech = config.technical
        self.agents = {name: (model, scaler, tuple(names)) for name, model, scaler, names in bundles}
        self.names = tuple(dict.fromkeys(n for _, _, _, names in bundles for n in names))
        self.by_tf: dict[str, list[str]] = {}
        for name in self.names:
            base, tf = split_feature(name)
            self.by_tf.setdefault(tf, []).append(base)
        self.decider = PythonDecider(config, manifests, self.names)
        self.warmup = max(int(m.get("lookback", 0)) for m in manifests.values())
        self.window: deque[tuple] = deque(maxlen=NAIVE_WINDOW)
        self.bars = 0
        self.atr_name = "atr_pct_1m"
        self.vol_name = f"rvol_{self.tech.realized_vol_period}_1m"

    def on_decision(self, decision: Any) -> None:
        self.decider.on_decision(decision)

    def warm_up(self, rows: Sequence[tuple]) -> None:
        """Consume past bars without computing anything (only the last window is kept)."""
        self.window.extend(rows)
        self.bars += len(rows)

    def features(self) -> dict[str, float]:
        """Every wanted feature of the latest bar, recomputed from the window."""
        pd = self._pd
        frame = pd.DataFrame(list(self.window), columns=["ts", "open", "high", "low", "close", "volume"])
        frame.index = pd.to_datetime(frame.pop("ts"), unit="ms")
        # Start on an hour so that no higher-timeframe bar of the window is partial.
        hour = frame.index.floor("h")
        frame = frame[hour > hour[0]] if frame.index[0] != hour[0] else frame
        values: dict[str, float] = {}
        for tf, bases in self.by_tf.items():
            minutes = TIMEFRAME_MINUTES[tf]
            computed = pandas_ta_features(_resample(frame, minutes), minutes, bases, self.tech)
            values.update((f"{b}_{tf}", x) for b, x in computed.items())
        return values

    def act(self, values: Mapping[str, float]) -> list[tuple[int, float]]:
        """``(action, its probability)`` of every member, by SB3 ``predict`` on the scaled row."""
        import torch

        members = []
        for name in self.decider.members:
            model, scaler, names = self.agents[name]
            obs = scaler.transform(np.array([[values[n] for n in names]])).astype(np.float32)
            action, _ = model.predict(obs, deterministic=True)
            with torch.no_grad():
                probs = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.probs
            a = int(action[0])
            members.append((a, float(probs[0, a])))
        return members

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float,
               v: float) -> dict[str, Any]:
        """The signal of one closed 1-minute bar."""
        self.window.append((ts, o, h, l, c, v))
        self.bars += 1
        decider = self.decider
        if decider.decision is None:
            return hold_signal(symbol, ts, "NO_DECISION")
        if self.bars < self.warmup:
            return hold_signal(symbol, ts, "WARM_UP")
        values = self.features()
        row = [values[n] for n in self.names]
        for tf in self.by_tf:
            if (ts // MINUTE_MS + 1) % TIMEFRAME_MINUTES[tf] == 0:
                decider.technical(tf, row)
        return decider.decide(symbol, ts, h, l, c, values[self.atr_name] * c, values[self.vol_name],
                              self.act(values))


def load_sb3_bundles(saved_models: Path, names: Sequence[str]) -> list[tuple[str, Any, Any, list[str]]]:
    """The seed bundles' SB3 models, scalers and feature names.

    Each ``<name>.pkl`` is read by l2fast's restricted unpickler (no code runs), then its
    SB3 zip bytes go to ``PPO.load`` as a stable-baselines3 user loads a model.
    """
    from stable_baselines3 import PPO

    from l2fast.export.safe_pickle import safe_load

    out = []
    for name in names:
        bundle = safe_load(saved_models / f"{name}.pkl")
        model = PPO.load(io.BytesIO(bundle["model"]), device="cpu")
        out.append((name, model, bundle["scaler"], list(bundle["feature_names"])))
    return out
