"""Configuration of l2fast's components, validated on construction.

Sections (each a frozen dataclass, grouped by :class:`L2Config` and mirrored by the
commented TOML file of every default, ``l2fast/data/l2fast.toml``, which
``l2fast config --template defaults`` prints):

- ``technical``: :class:`TechnicalConfig`, the seed's ``TECHNICAL_CONFIG``.
- ``model``: :class:`ModelConfig`, the seed's ``MODEL_CONFIG`` (ensemble weights, regime
  multipliers, voting, thresholds), with ``model.vote``: :class:`VoteConfig`, the vote's
  finer settings (dead band, technical votes' levels, windows and weights).
- ``risk``: :class:`RiskConfig`, the seed's ``RISK_CONFIG`` (sizing and the risk gate).
- ``engine``: :class:`EngineConfig`, the engine's own bookkeeping.

Unknown keys and out-of-range values raise :class:`l2fast.errors.ConfigError` naming the
full key path and the value, e.g. ``risk.kelly_fraction=1.5: must be in (0, 1]`` or
``technical.levels.merge_tol``.

Merge rules of :meth:`L2Config.from_dict` (and so of TOML files): a missing key keeps its
default; ``technical.levels``, ``model.regime_multipliers.<regime>``,
``model.vote.component_weights``, ``model.vote.pattern_weights``,
``risk.risk_appetite_multipliers`` and ``risk.symbols.<symbol>`` are merged key by key over
their defaults; ``model.weights``, when given, replaces the default table entirely (its
keys name the ensemble members).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from l2fast.data import models_dir as shipped_models_dir
from l2fast.decision._voting import COMPONENTS, MAX_WINDOW
from l2fast.errors import ConfigError
from l2fast.technical._candles import CANDLESTICK_PATTERNS
from l2fast.technical._features import MAX_RSI_PERIODS
from l2fast.technical._turbulence import MAX_ASSETS as MAX_TURBULENCE_SYMBOLS
from l2fast.technical.bars import parse_timeframe

__all__ = [
    "REGIMES",
    "RISK_APPETITES",
    "SYMBOL_PATTERN",
    "is_symbol",
    "EngineConfig",
    "FrozenDict",
    "L2Config",
    "ModelConfig",
    "Regime",
    "RiskAppetite",
    "RiskConfig",
    "TechnicalConfig",
    "VoteConfig",
    "default_models_dir",
]

Regime = Literal["trending", "ranging", "volatile"]
RiskAppetite = Literal["conservative", "moderate", "aggressive"]

#: Market regimes L3 may announce (L2 never decides the regime itself).
REGIMES: tuple[str, ...] = ("trending", "ranging", "volatile")
#: Risk appetites L3 may announce.
RISK_APPETITES: tuple[str, ...] = ("conservative", "moderate", "aggressive")
#: A trading pair: ``BASE/QUOTE`` in upper-case letters and digits (``BTC/USDT``, ``1000SHIB/USDT``).
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")


@lru_cache(maxsize=1024)
def is_symbol(symbol: str) -> bool:
    """Whether ``symbol`` (a ``str``) matches :data:`SYMBOL_PATTERN`; cached, since signals
    and bus messages check the same few symbols on every bar."""
    return SYMBOL_PATTERN.fullmatch(symbol) is not None

_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MODELS_DIR_ENV = "L2FAST_MODELS_DIR"
# The longest span an engine.*_ms bound may have: about 292 years, far from int64's end.
_MAX_SPAN_MS = 2**53


class FrozenDict(dict):
    """A read-only ``dict``: the tables inside the frozen config dataclasses.

    It compares, hashes, pickles and serialises to JSON like the plain dict it copies;
    every mutating method raises ``TypeError``.
    """

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config tables are read-only; build a new config instead")

    __setitem__ = __delitem__ = __ior__ = _readonly  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        # dict's own reduce would refill the copy through the blocked __setitem__.
        return (FrozenDict, (dict(self),))


# ---------------------------------------------------------------------------------------
# Shared validation helpers: each returns the (coerced) value or raises ConfigError
# naming ``path`` and the value.


def _key(key: str) -> str:
    """A key as written in TOML: bare when it can be, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _child(path: str, key: str) -> str:
    """The dotted path of ``key`` inside the table at ``path`` (``""`` is the root)."""
    return f"{path}.{_key(key)}" if path else _key(key)


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _real(path: str, value: Any, lo: float | None = None, hi: float | None = None, *,
          lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within the given bounds, returned as ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{path}={value!r}: must be a number")
    v = float(value)
    ok = math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        raise ConfigError(f"{path}={value!r}: must be {_interval(lo, hi, lo_open, hi_open)}")
    return v


def _integer(path: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        ok = False
    else:
        value = int(value)
        ok = value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        rule = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{path}={value!r}: must be an integer {rule}")
    return value


def _flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}={value!r}: must be true or false")
    return value


def _choice(path: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise ConfigError(f"{path}={value!r}: must be one of {', '.join(map(repr, choices))}")
    return value


def _table(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}={value!r}: must be a table")
    return value


def _check_keys(path: str, data: Mapping[str, Any], known: tuple[str, ...] | list[str], what: str = "key") -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{_child(path, str(key))}: unknown {what} (known: {', '.join(sorted(known))})")


def _section_kwargs(cls: type, data: Any, path: str) -> dict[str, Any]:
    """Check ``data`` is a table of ``cls``'s fields; lists become tuples."""
    data = _table(path, data)
    _check_keys(path, data, [f.name for f in fields(cls)])
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _set(obj: object, name: str, value: Any) -> None:
    # Frozen dataclasses store their coerced, validated values this way.
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------------------------------
# technical


def _levels_defaults() -> dict[str, float]:
    return {
        "pivot_bars": 5,
        "merge_tol": 0.003,
        "half_life": 500,
        "min_strength": 0.25,
        "max_levels": 16,
        "volume_mult": 1.5,
        "volume_window": 20,
        "min_separation": 10,
        "min_depth": 0.01,
        "range_window": 30,
        "range_pct": 0.01,
    }


# The same rules as l2fast.technical.indicators.SupportResistance, checked here so that a bad TOML
# value is reported with its key path instead of reaching the compiled kernel.
_LEVELS_RULES: dict[str, Any] = {
    "pivot_bars": lambda p, v: _integer(p, v, 1),
    "merge_tol": lambda p, v: _real(p, v, 0.0, 1.0, hi_open=True),
    "half_life": lambda p, v: _real(p, v, 0.0, lo_open=True),
    "min_strength": lambda p, v: _real(p, v, 0.0, 1.0, lo_open=True, hi_open=True),
    "max_levels": lambda p, v: _integer(p, v, 1, 32),
    "volume_mult": lambda p, v: _real(p, v, 0.0),
    "volume_window": lambda p, v: _integer(p, v, 1),
    "min_separation": lambda p, v: _integer(p, v, 1),
    "min_depth": lambda p, v: _real(p, v, 0.0, 1.0, hi_open=True),
    "range_window": lambda p, v: _integer(p, v, 2),
    "range_pct": lambda p, v: _real(p, v, 0.0),
}


def _int_tuple(name: str, value: Any, length: int | None, minimum: int) -> None:
    if not isinstance(value, tuple) or (length is not None and len(value) != length):
        shape = f"a list of {length} integers" if length else "a list of integers"
        raise ConfigError(f"{name}={value!r}: must be {shape}")
    for p in value:
        _integer(name, p, minimum)


@dataclass(frozen=True)
class TechnicalConfig:
    """Parameters of the technical core (the seed's ``TECHNICAL_CONFIG``).

    Attributes:
        timeframes: Timeframes computed; the first must be ``"1m"`` (the primary stream).
        rsi_periods: RSI periods, each giving ``rsi_<p>_<tf>``.
        macd: ``(fast, slow, signal)`` periods.
        bb_period: Bollinger Bands window.
        bb_std: Bollinger Bands width in standard deviations.
        atr_period: ATR period (also ``atr_pct_<tf>`` = ATR / close).
        stoch: ``(fastk, slowk, slowd)`` periods of the Stochastic oscillator.
        adx_period: ADX / +DI / -DI period.
        volume_z_period: Window of the volume z-score.
        realized_vol_period: Window (in returns) of the annualised realized volatility.
        donchian_period: Donchian channel window.
        levels: Support/resistance and chart-pattern parameters
            (see :class:`l2fast.technical.indicators.SupportResistance`).
        turbulence_symbols: The symbols of FinRL's turbulence index, in the order of its
            return vector (at most 8; empty, the default: no index). The engine steps it on
            the first bar all of them share after each has closed a ``turbulence_timeframe``
            bar; members read it as ``turbulence_<tf>``, ``risk.turbulence_threshold`` gates on it.
        turbulence_timeframe: The timeframe whose closes feed the index (one of
            ``timeframes`` when the index is on).
        turbulence_window: Rows of returns in its trailing covariance (FinRL's 252), >= 3.
    """

    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    rsi_periods: tuple[int, ...] = (14, 21)
    macd: tuple[int, int, int] = (12, 26, 9)
    bb_period: int = 20
    bb_std: float = 2.0
    atr_period: int = 14
    stoch: tuple[int, int, int] = (14, 3, 3)
    adx_period: int = 14
    volume_z_period: int = 20
    realized_vol_period: int = 60
    donchian_period: int = 20
    levels: Mapping[str, float] = field(default_factory=_levels_defaults)
    turbulence_symbols: tuple[str, ...] = ()
    turbulence_timeframe: str = "1h"
    turbulence_window: int = 252

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "technical") -> TechnicalConfig:
        """Build a config from a mapping (e.g. a TOML table), rejecting unknown keys.

        Args:
            data: Keys are attribute names; missing keys keep their defaults.
            path: Key path used in error messages.

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        kwargs = _section_kwargs(cls, data, path)
        if "levels" in kwargs:
            levels = _levels_defaults()
            given = _table(f"{path}.levels", kwargs["levels"])
            _check_keys(f"{path}.levels", given, list(levels))
            levels.update(given)
            kwargs["levels"] = levels
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None

    def _validate(self) -> None:
        if not isinstance(self.timeframes, tuple) or not self.timeframes or self.timeframes[0] != "1m":
            raise ConfigError(f"timeframes={self.timeframes!r}: the first timeframe must be '1m'")
        minutes = []
        for tf in self.timeframes:
            if not isinstance(tf, str):
                raise ConfigError(f"timeframes={self.timeframes!r}: timeframes are strings such as '5m'")
            try:
                minutes.append(parse_timeframe(tf))
            except ValueError as exc:
                raise ConfigError(f"timeframes: {exc}") from None
        if minutes != sorted(set(minutes)):
            raise ConfigError(f"timeframes={self.timeframes!r}: must be distinct and increasing")
        if not isinstance(self.rsi_periods, tuple) or not 1 <= len(self.rsi_periods) <= MAX_RSI_PERIODS:
            raise ConfigError(f"rsi_periods={self.rsi_periods!r}: give 1 to {MAX_RSI_PERIODS} periods")
        _int_tuple("rsi_periods", self.rsi_periods, None, 2)
        _int_tuple("macd", self.macd, 3, 2)
        if self.macd[0] >= self.macd[1]:
            raise ConfigError(f"macd={self.macd!r}: fast must be shorter than slow")
        _int_tuple("stoch", self.stoch, 3, 1)
        for name in ("bb_period", "atr_period", "adx_period", "volume_z_period", "realized_vol_period",
                     "donchian_period"):
            _integer(name, getattr(self, name), 2)
        _real("bb_std", self.bb_std, 0.0, 10.0, lo_open=True)
        levels = _table("levels", self.levels)
        _check_keys("levels", levels, list(_LEVELS_RULES))
        missing = [key for key in _LEVELS_RULES if key not in levels]
        if missing:
            raise ConfigError(f"levels: missing keys {', '.join(missing)}")
        for key, value in levels.items():
            _LEVELS_RULES[key](f"levels.{key}", value)
        symbols = self.turbulence_symbols
        if (not isinstance(symbols, tuple) or len(symbols) > MAX_TURBULENCE_SYMBOLS
                or len(set(symbols)) != len(symbols)
                or not all(isinstance(x, str) and SYMBOL_PATTERN.fullmatch(x) for x in symbols)):
            raise ConfigError(f"turbulence_symbols={symbols!r}: at most {MAX_TURBULENCE_SYMBOLS} distinct symbols "
                              f"like 'BTC/USDT'")
        if symbols and self.turbulence_timeframe not in self.timeframes:
            raise ConfigError(f"turbulence_timeframe={self.turbulence_timeframe!r}: must be one of timeframes "
                              f"{list(self.timeframes)}")
        _integer("turbulence_window", self.turbulence_window, 3)

    @property
    def timeframe_minutes(self) -> tuple[int, ...]:
        """The timeframes in minutes, in configured order."""
        return tuple(parse_timeframe(tf) for tf in self.timeframes)


# ---------------------------------------------------------------------------------------
# model


def default_models_dir() -> Path:
    """The models folder used when ``model.models_dir`` is empty.

    ``$L2FAST_MODELS_DIR`` when set and non-empty, else the shipped demo agents, package
    data of the installed ``l2fast`` (:func:`l2fast.data.models_dir`). Read at call time,
    so the environment never changes a config's value, only where an empty one points.
    """
    env = os.environ.get(_MODELS_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return shipped_models_dir()


def _weights_defaults() -> dict[str, float]:
    return {"trend_agent": 0.4, "mean_revert_agent": 0.35, "volatility_agent": 0.25}


def _regime_multipliers_defaults() -> dict[str, dict[str, float]]:
    # Each regime favours its specialist and damps the agent whose premise it breaks.
    return {
        "trending": {"trend_agent": 1.5, "mean_revert_agent": 0.5, "volatility_agent": 1.0},
        "ranging": {"trend_agent": 0.5, "mean_revert_agent": 1.5, "volatility_agent": 1.0},
        "volatile": {"trend_agent": 0.75, "mean_revert_agent": 0.75, "volatility_agent": 1.5},
    }


def _confidence_weights_defaults() -> dict[str, float]:
    return {"model": 0.5, "technical": 0.25, "alignment": 0.25}


def _component_weights_defaults() -> dict[str, float]:
    return dict.fromkeys(COMPONENTS, 1.0)


# The directional candlestick patterns that are reliable enough to vote; the doji family,
# harami, harami cross, marubozu and spinning top say little about the side and weigh 0.
_RELIABLE_PATTERNS = frozenset((
    "CDLENGULFING", "CDLHAMMER", "CDLHANGINGMAN", "CDLINVERTEDHAMMER", "CDLSHOOTINGSTAR",
    "CDLPIERCING", "CDLDARKCLOUDCOVER", "CDLMORNINGSTAR", "CDLEVENINGSTAR",
    "CDL3WHITESOLDIERS", "CDL3BLACKCROWS",
))


def _pattern_weights_defaults() -> dict[str, float]:
    return {name: 1.0 if name in _RELIABLE_PATTERNS else 0.0 for name in CANDLESTICK_PATTERNS}


#: Weight of a timeframe missing from ``model.vote.timeframe_weights``.
_TIMEFRAME_WEIGHT = 1.0


def _merged_weights(path: str, given: Any, defaults: Mapping[str, float]) -> FrozenDict:
    """``given`` merged key by key over ``defaults``: known keys only, each >= 0."""
    given = _table(path, given)
    _check_keys(path, given, list(defaults))
    return FrozenDict({k: _real(_child(path, k), given.get(k, d), 0.0) for k, d in defaults.items()})


@dataclass(frozen=True)
class VoteConfig:
    """The vote's finer settings (``[model.vote]``; formulas: :mod:`l2fast.decision.voting`).

    Attributes:
        dead_band: Scores within ``[-dead_band, dead_band]`` have no side, in [0, 1).
        rsi_index: Which of ``technical.rsi_periods`` the RSI votes read (0: the first).
        timeframe_weights: Weight of each timeframe in the technical score and the
            alignment, >= 0; a timeframe not listed weighs 1.
        component_weights: Weight of each technical component (``rsi_level``,
            ``rsi_divergence``, ``macd_cross``, ``macd_histogram``, ``bb_pctb``,
            ``bb_squeeze``, ``patterns``, ``sr_breakout``), >= 0; 1 each by default.
        pattern_weights: Weight of each candlestick pattern (TA-Lib names such as
            ``CDLENGULFING``), >= 0; by default 1 for the directional, reliable ones, else 0.
        pattern_scale: Summed pattern signal (units of 100) giving a full vote, > 0.
        rsi_oversold: RSI below it votes buy, in [0, 100], < ``rsi_overbought``.
        rsi_overbought: RSI above it votes sell, in [0, 100].
        pctb_low: %b below it votes buy, <= ``pctb_high``.
        pctb_high: %b above it votes sell.
        divergence_window: Bars searched for the prior low/high of a divergence,
            in [1, 127].
        divergence_min_gap: Bars between that prior extreme and the current bar, in
            [1, ``divergence_window``].
        squeeze_window: Bars of the band-width minimum, in [2, 127].
        squeeze_tolerance: A squeeze is a width within this fraction of the minimum, >= 0.
        squeeze_memory: Bars after a squeeze during which a close outside the bands votes,
            in [1, 1000000].
        q_temperature: Softmax temperature turning a DQN member's Q-values into its
            confidence, > 0 (Q-values are in the reward's units).
    """

    _SECTION: ClassVar[str] = "model.vote"

    dead_band: float = 0.05
    rsi_index: int = 0
    timeframe_weights: Mapping[str, float] = field(default_factory=dict)
    component_weights: Mapping[str, float] = field(default_factory=_component_weights_defaults)
    pattern_weights: Mapping[str, float] = field(default_factory=_pattern_weights_defaults)
    pattern_scale: float = 1.0
    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    pctb_low: float = 0.0
    pctb_high: float = 1.0
    divergence_window: int = 20
    divergence_min_gap: int = 5
    squeeze_window: int = 100
    squeeze_tolerance: float = 0.05
    squeeze_memory: int = 10
    q_temperature: float = 1.0

    def __post_init__(self) -> None:
        s = self._SECTION
        _set(self, "dead_band", _real(f"{s}.dead_band", self.dead_band, 0.0, 1.0, hi_open=True))
        _set(self, "rsi_index", _integer(f"{s}.rsi_index", self.rsi_index, 0, MAX_RSI_PERIODS - 1))
        path = f"{s}.timeframe_weights"
        given = _table(path, self.timeframe_weights)
        for tf in given:
            if not isinstance(tf, str) or not tf:
                raise ConfigError(f"{path}: timeframe {tf!r} must be a name such as '5m'")
        _set(self, "timeframe_weights", FrozenDict({
            tf: _real(_child(path, tf), w, 0.0) for tf, w in given.items()}))
        _set(self, "component_weights", _merged_weights(
            f"{s}.component_weights", self.component_weights, _component_weights_defaults()))
        _set(self, "pattern_weights", _merged_weights(
            f"{s}.pattern_weights", self.pattern_weights, _pattern_weights_defaults()))
        _set(self, "pattern_scale", _real(f"{s}.pattern_scale", self.pattern_scale, 0.0, lo_open=True))
        for name in ("rsi_oversold", "rsi_overbought"):
            _set(self, name, _real(f"{s}.{name}", getattr(self, name), 0.0, 100.0))
        if self.rsi_oversold >= self.rsi_overbought:
            raise ConfigError(f"{s}.rsi_oversold={self.rsi_oversold!r}: must be < "
                              f"{s}.rsi_overbought ({self.rsi_overbought!r})")
        for name in ("pctb_low", "pctb_high"):
            _set(self, name, _real(f"{s}.{name}", getattr(self, name)))
        if self.pctb_low > self.pctb_high:
            raise ConfigError(f"{s}.pctb_low={self.pctb_low!r}: must be <= {s}.pctb_high ({self.pctb_high!r})")
        _set(self, "divergence_window", _integer(f"{s}.divergence_window", self.divergence_window, 1, MAX_WINDOW))
        _set(self, "divergence_min_gap", _integer(f"{s}.divergence_min_gap", self.divergence_min_gap, 1,
                                                  self.divergence_window))
        _set(self, "squeeze_window", _integer(f"{s}.squeeze_window", self.squeeze_window, 2, MAX_WINDOW))
        _set(self, "squeeze_tolerance", _real(f"{s}.squeeze_tolerance", self.squeeze_tolerance, 0.0))
        _set(self, "squeeze_memory", _integer(f"{s}.squeeze_memory", self.squeeze_memory, 1, 1_000_000))
        _set(self, "q_temperature", _real(f"{s}.q_temperature", self.q_temperature, 0.0, lo_open=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VoteConfig:
        """Build the section from a table (missing keys keep their defaults; the weight
        tables are merged key by key over theirs).

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        return cls(**_section_kwargs(cls, data, cls._SECTION))

    def timeframe_weight(self, timeframe: str) -> float:
        """The weight of ``timeframe`` (its entry, else 1)."""
        return self.timeframe_weights.get(timeframe, _TIMEFRAME_WEIGHT)


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX ensemble and its vote (the seed's ``MODEL_CONFIG``).

    A member's effective weight in a regime is ``weights[m] * regime_multipliers[regime][m]``
    (renormalised over the members that produced a finite output on that bar).

    Attributes:
        models_dir: Folder of the ONNX models and manifests; ``""`` means
            :func:`default_models_dir` (``$L2FAST_MODELS_DIR``, else the shipped agents,
            package data: :func:`l2fast.data.models_dir`, i.e. ``l2fast/data/onnx_models``).
            A relative path in a TOML file is relative to that file's folder.
        weights: Ensemble weight per member (model name); non-negative, not all zero.
            Its keys name the ensemble members.
        regime_multipliers: ``{regime: {member: multiplier}}`` for each of
            :data:`REGIMES`; non-negative; a member missing from a regime gets 1.0. Stored
            as the full matrix (every regime, every member).
        voting: ``"weighted"`` (weighted mean of the members' target positions) or
            ``"majority"`` (weighted count of the members' sides).
        consensus_threshold: Minimum weighted agreement with the chosen side, in [0, 1].
        confidence_threshold: Minimum combined confidence, in [0, 1].
        alignment_threshold: Minimum multi-timeframe alignment score, in [0, 1].
        technical_weight: Share of the technical votes in the fused vote, in [0, 1]; the
            model ensemble gets ``1 - technical_weight``.
        confidence_weights: Weights of the members' confidence (``model``), the technical
            agreement (``technical``) and the timeframe alignment (``alignment``) in the
            combined confidence; non-negative, not all zero; a key not given keeps its
            default (0.5, 0.25, 0.25).
        vote: The vote's finer settings (``[model.vote]``, :class:`VoteConfig`).
        inference: What runs the members each bar: ``"compiled"`` (the compiled MLP
            forward, :mod:`l2fast.models.compiled`, for every member that passed its
            load-time check against onnxruntime; the others on the fused onnxruntime graph)
            or ``"onnxruntime"`` (the fused graph for all). Compiled probabilities differ
            from onnxruntime's by about 1e-6.
    """

    _SECTION: ClassVar[str] = "model"

    models_dir: str = ""
    weights: Mapping[str, float] = field(default_factory=_weights_defaults)
    regime_multipliers: Mapping[str, Mapping[str, float]] = field(default_factory=_regime_multipliers_defaults)
    voting: Literal["weighted", "majority"] = "weighted"
    consensus_threshold: float = 0.6
    confidence_threshold: float = 0.7
    alignment_threshold: float = 0.7
    technical_weight: float = 0.3
    confidence_weights: Mapping[str, float] = field(default_factory=_confidence_weights_defaults)
    vote: VoteConfig = field(default_factory=VoteConfig)
    inference: Literal["compiled", "onnxruntime"] = "compiled"

    def __post_init__(self) -> None:
        s = self._SECTION
        if not isinstance(self.vote, VoteConfig):
            raise ConfigError(f"{s}.vote={self.vote!r}: must be a VoteConfig")
        if not isinstance(self.models_dir, (str, os.PathLike)):
            raise ConfigError(f"{s}.models_dir={self.models_dir!r}: must be a path string")
        _set(self, "models_dir", os.fspath(self.models_dir))
        weights = _table(f"{s}.weights", self.weights)
        if not weights:
            raise ConfigError(f"{s}.weights={{}}: name at least one ensemble member")
        clean: dict[str, float] = {}
        for name, w in weights.items():
            if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
                raise ConfigError(f"{s}.weights: member name {name!r} must match [A-Za-z0-9_.-]+")
            clean[name] = _real(_child(f"{s}.weights", name), w, 0.0)
        if not any(clean.values()):
            raise ConfigError(f"{s}.weights={clean!r}: weights must not all be zero")
        _set(self, "weights", FrozenDict(clean))

        given = _table(f"{s}.regime_multipliers", self.regime_multipliers)
        _check_keys(f"{s}.regime_multipliers", given, REGIMES, "regime")
        matrix: dict[str, FrozenDict] = {}
        for regime in REGIMES:
            path = f"{s}.regime_multipliers.{regime}"
            row = _table(path, given.get(regime, {}))
            _check_keys(path, row, list(clean), "member (not in model.weights)")
            mult = {m: _real(_child(path, m), row.get(m, 1.0), 0.0) for m in clean}
            if not any(clean[m] * mult[m] for m in clean):
                raise ConfigError(f"{path}={mult!r}: every member's weight is zero in this regime")
            matrix[regime] = FrozenDict(mult)
        _set(self, "regime_multipliers", FrozenDict(matrix))

        _choice(f"{s}.voting", self.voting, ("weighted", "majority"))
        _choice(f"{s}.inference", self.inference, ("compiled", "onnxruntime"))
        for name in ("consensus_threshold", "confidence_threshold", "alignment_threshold", "technical_weight"):
            _set(self, name, _real(f"{s}.{name}", getattr(self, name), 0.0, 1.0))
        path = f"{s}.confidence_weights"
        given = _table(path, self.confidence_weights)
        defaults = _confidence_weights_defaults()
        _check_keys(path, given, list(defaults))
        conf = {k: _real(_child(path, k), given.get(k, d), 0.0) for k, d in defaults.items()}
        if not any(conf.values()):
            raise ConfigError(f"{path}={conf!r}: must not all be zero")
        _set(self, "confidence_weights", FrozenDict(conf))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build the section from a table, merging tables over the defaults (module docstring).

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        kwargs = _section_kwargs(cls, data, cls._SECTION)
        weights = _table(f"{cls._SECTION}.weights", kwargs.get("weights", _weights_defaults()))
        given = _table(f"{cls._SECTION}.regime_multipliers", kwargs.get("regime_multipliers", {}))
        # Defaults of members that left the ensemble are dropped, not reported as unknown.
        merged: dict[str, Any] = {r: {m: v for m, v in row.items() if m in weights}
                                  for r, row in _regime_multipliers_defaults().items()}
        for regime, row in given.items():
            path = f"{cls._SECTION}.regime_multipliers.{regime}"
            merged[regime] = {**merged.get(regime, {}), **_table(path, row)}
        kwargs["regime_multipliers"] = merged
        if "vote" in kwargs:
            kwargs["vote"] = VoteConfig.from_dict(kwargs["vote"])
        return cls(**kwargs)

    def resolve_models_dir(self) -> Path:
        """The models folder: ``models_dir`` if set, else :func:`default_models_dir`."""
        return Path(self.models_dir).expanduser() if self.models_dir else default_models_dir()

    def effective_weights(self, regime: str) -> dict[str, float]:
        """``weights[m] * regime_multipliers[regime][m]`` normalised to sum 1, per member.

        Raises:
            ConfigError: ``regime`` is not one of :data:`REGIMES`.
        """
        row = self.regime_multipliers[_choice("regime", regime, REGIMES)]
        raw = {m: w * row[m] for m, w in self.weights.items()}
        total = math.fsum(raw.values())
        return {m: v / total for m, v in raw.items()}


# ---------------------------------------------------------------------------------------
# risk


def _appetite_defaults() -> dict[str, float]:
    return {"conservative": 0.5, "moderate": 1.0, "aggressive": 1.5}


_SYMBOL_RULE_KEYS = ("lot_step", "min_notional")


@dataclass(frozen=True)
class RiskConfig:
    """Position sizing and the risk gate (the seed's ``RISK_CONFIG``).

    Fractions are of current equity; R is the distance from entry to the stop.

    Attributes:
        kelly_fraction: Fraction of the Kelly bet ``f* = p - (1 - p) / b``, in (0, 1].
        volatility_target: Annualised volatility target of a position, > 0.
        max_position_size: Largest position notional as a fraction of equity, in (0, 1],
            at most ``exposure_limit``.
        atr_multiplier: Stop distance in ATRs, > 0.
        max_loss_per_trade: Largest loss at the stop as a fraction of equity, in (0, 1].
        take_profit_r: Take-profit distance in R, > 0.
        breakeven_threshold: Profit in R at which the stop moves to breakeven, > 0.
        trailing_atr_multiplier: Trailing-stop distance in ATRs, > 0; defaults to
            ``atr_multiplier`` (when omitted, it follows that value).
        max_daily_trades: Most entries per UTC day, >= 1.
        daily_loss_limit: Loss (fraction of the day's starting equity) that halts new
            entries for the rest of the UTC day, in (0, 1]; exits stay allowed.
        max_concurrent_positions: Most open positions at once, >= 1.
        exposure_limit: Largest total open notional as a fraction of equity, in (0, 1].
        lot_step: Quantity step orders are rounded down to, > 0 (base-asset units).
        min_notional: Smallest order notional in quote currency (USDT), >= 0.
        symbols: Per-symbol overrides ``{"BTC/USDT": {"lot_step": ..., "min_notional": ...}}``.
        risk_appetite_multipliers: Size multiplier per L3 risk appetite, >= 0.
        min_trades_for_live_stats: Closed trades needed before live win rate and payoff
            replace the manifests' metrics in the Kelly formula, >= 1.
        correlation_window: Bars of returns in the rolling correlation against open
            positions, >= 2.
        allow_short: A sell signal while flat opens a short; false (spot trading, the
            default): such a sell is denied with ``SHORT_NOT_ALLOWED``.
        max_vol_scale: Cap of the volatility-targeting scale ``volatility_target / vol``,
            > 0 (it also floors the volatility used at ``volatility_target / max_vol_scale``).
        confidence_scaling: Multiply each entry's size by the signal's confidence.
        kelly_win_rate: Fixed Kelly win rate ``p`` in [0, 1] replacing the manifests'
            metrics (live statistics still take over after ``min_trades_for_live_stats``
            trades); set together with ``kelly_payoff_ratio``. Omitted: the manifests'.
        kelly_payoff_ratio: Fixed Kelly payoff ratio ``b`` >= 0 (with ``kelly_win_rate``).
        turbulence_threshold: FinRL's turbulence gate, > 0 (needs
            ``technical.turbulence_symbols``): while the index is at or above it, entries
            are denied with ``TURBULENCE`` and every open position is exited. Omitted: off.
    """

    _SECTION: ClassVar[str] = "risk"

    kelly_fraction: float = 0.25
    volatility_target: float = 0.15
    max_position_size: float = 0.10
    atr_multiplier: float = 2.0
    max_loss_per_trade: float = 0.02
    take_profit_r: float = 2.0
    breakeven_threshold: float = 1.5
    trailing_atr_multiplier: float | None = None
    max_daily_trades: int = 10
    daily_loss_limit: float = 0.05
    max_concurrent_positions: int = 3
    exposure_limit: float = 0.8
    lot_step: float = 0.00001
    min_notional: float = 10.0
    symbols: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    risk_appetite_multipliers: Mapping[str, float] = field(default_factory=_appetite_defaults)
    min_trades_for_live_stats: int = 30
    correlation_window: int = 60
    allow_short: bool = False
    max_vol_scale: float = 1.0
    confidence_scaling: bool = True
    kelly_win_rate: float | None = None
    kelly_payoff_ratio: float | None = None
    turbulence_threshold: float | None = None

    def __post_init__(self) -> None:
        s = self._SECTION
        _set(self, "allow_short", _flag(f"{s}.allow_short", self.allow_short))
        _set(self, "confidence_scaling", _flag(f"{s}.confidence_scaling", self.confidence_scaling))
        _set(self, "max_vol_scale", _real(f"{s}.max_vol_scale", self.max_vol_scale, 0.0, lo_open=True))
        if (self.kelly_win_rate is None) != (self.kelly_payoff_ratio is None):
            given = "kelly_win_rate" if self.kelly_payoff_ratio is None else "kelly_payoff_ratio"
            raise ConfigError(f"{s}.{given}={getattr(self, given)!r}: set kelly_win_rate and "
                              "kelly_payoff_ratio together")
        if self.turbulence_threshold is not None:
            _set(self, "turbulence_threshold",
                 _real(f"{s}.turbulence_threshold", self.turbulence_threshold, 0.0, lo_open=True))
        if self.kelly_win_rate is not None:
            _set(self, "kelly_win_rate", _real(f"{s}.kelly_win_rate", self.kelly_win_rate, 0.0, 1.0))
            _set(self, "kelly_payoff_ratio", _real(f"{s}.kelly_payoff_ratio", self.kelly_payoff_ratio, 0.0))
        for name in ("kelly_fraction", "max_position_size", "max_loss_per_trade", "daily_loss_limit", "exposure_limit"):
            _set(self, name, _real(f"{s}.{name}", getattr(self, name), 0.0, 1.0, lo_open=True))
        for name in ("volatility_target", "atr_multiplier", "take_profit_r", "breakeven_threshold", "lot_step"):
            _set(self, name, _real(f"{s}.{name}", getattr(self, name), 0.0, lo_open=True))
        trailing = self.atr_multiplier if self.trailing_atr_multiplier is None else self.trailing_atr_multiplier
        _set(self, "trailing_atr_multiplier", _real(f"{s}.trailing_atr_multiplier", trailing, 0.0, lo_open=True))
        _set(self, "min_notional", _real(f"{s}.min_notional", self.min_notional, 0.0))
        if self.max_position_size > self.exposure_limit:
            raise ConfigError(f"{s}.max_position_size={self.max_position_size!r}: must be <= "
                              f"{s}.exposure_limit ({self.exposure_limit!r})")
        for name, minimum in (("max_daily_trades", 1), ("max_concurrent_positions", 1),
                              ("min_trades_for_live_stats", 1), ("correlation_window", 2)):
            _set(self, name, _integer(f"{s}.{name}", getattr(self, name), minimum))

        symbols: dict[str, FrozenDict] = {}
        for symbol, rules in _table(f"{s}.symbols", self.symbols).items():
            path = _child(f"{s}.symbols", str(symbol))
            if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
                raise ConfigError(f"{path}: symbol must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
            rules = _table(path, rules)
            _check_keys(path, rules, _SYMBOL_RULE_KEYS)
            clean = {}
            if "lot_step" in rules:
                clean["lot_step"] = _real(f"{path}.lot_step", rules["lot_step"], 0.0, lo_open=True)
            if "min_notional" in rules:
                clean["min_notional"] = _real(f"{path}.min_notional", rules["min_notional"], 0.0)
            symbols[symbol] = FrozenDict(clean)
        _set(self, "symbols", FrozenDict(symbols))

        appetites = _table(f"{s}.risk_appetite_multipliers", self.risk_appetite_multipliers)
        _check_keys(f"{s}.risk_appetite_multipliers", appetites, RISK_APPETITES, "risk appetite")
        defaults = _appetite_defaults()
        _set(self, "risk_appetite_multipliers", FrozenDict({
            a: _real(f"{s}.risk_appetite_multipliers.{a}", appetites.get(a, defaults[a]), 0.0)
            for a in RISK_APPETITES}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskConfig:
        """Build the section from a table (missing keys keep their defaults).

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        return cls(**_section_kwargs(cls, data, cls._SECTION))

    def lot_step_for(self, symbol: str) -> float:
        """The lot step of ``symbol`` (its override, else ``lot_step``)."""
        return self.symbols.get(symbol, {}).get("lot_step", self.lot_step)

    def min_notional_for(self, symbol: str) -> float:
        """The minimum order notional of ``symbol`` (its override, else ``min_notional``)."""
        return self.symbols.get(symbol, {}).get("min_notional", self.min_notional)


# ---------------------------------------------------------------------------------------
# engine


@dataclass(frozen=True)
class EngineConfig:
    """The engine's own bookkeeping.

    Attributes:
        initial_equity: Equity (quote currency) before the first fill, > 0.
        max_decision_age_ms: A strategic decision older than this (bar time minus the
            decision's ``ts_ms``) is stale and the engine holds; 0 disables the check.
        live_stats_window: Most recent closed trades kept for the live win rate and payoff
            ratio, >= ``risk.min_trades_for_live_stats``.
        symbols: The symbols whose bars may open a slot (of the engine's 16), besides L3's
            universe, which is always allowed. Empty (the default): any symbol, until the
            slots are full; production should list its symbols, so that bars of stray
            symbols cannot fill the slots that L3's universe needs.
        max_bar_gap_ms: A bar more than this after the symbol's previous bar (a new
            symbol's: after the engine's latest bar) is refused; 0 disables the check.
        max_clock_lead_ms: When > 0 (live trading), a bar or fill more than this ahead of
            the wall clock is refused; 0 (the default: backtests replay any time) disables it.
        max_fill_lead_ms: A fill more than this after the engine's latest bar is refused;
            0 disables the check.
        max_fill_notional: Largest notional a fill may open or add, as a multiple of equity, > 0.
    """

    _SECTION: ClassVar[str] = "engine"

    initial_equity: float = 10_000.0
    max_decision_age_ms: int = 86_400_000
    live_stats_window: int = 100
    symbols: tuple[str, ...] = ()
    max_bar_gap_ms: int = 30 * 86_400_000
    max_clock_lead_ms: int = 0
    max_fill_lead_ms: int = 86_400_000
    max_fill_notional: float = 10.0

    def __post_init__(self) -> None:
        s = self._SECTION
        _set(self, "initial_equity", _real(f"{s}.initial_equity", self.initial_equity, 0.0, lo_open=True))
        _set(self, "max_decision_age_ms", _integer(f"{s}.max_decision_age_ms", self.max_decision_age_ms, 0))
        _set(self, "live_stats_window", _integer(f"{s}.live_stats_window", self.live_stats_window, 1))
        for name in ("max_bar_gap_ms", "max_clock_lead_ms", "max_fill_lead_ms"):
            # Bounded so that a timestamp plus the span stays inside the core's int64.
            _set(self, name, _integer(f"{s}.{name}", getattr(self, name), 0, _MAX_SPAN_MS))
        _set(self, "max_fill_notional", _real(f"{s}.max_fill_notional", self.max_fill_notional, 0.0, lo_open=True))
        if isinstance(self.symbols, str) or not isinstance(self.symbols, (tuple, list)):
            raise ConfigError(f"{s}.symbols={self.symbols!r}: must be a list of symbols like 'BTC/USDT'")
        for symbol in self.symbols:
            if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
                raise ConfigError(f"{s}.symbols: {symbol!r} must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"{s}.symbols={list(self.symbols)!r}: a symbol is listed twice")
        _set(self, "symbols", tuple(str.__str__(symbol) for symbol in self.symbols))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineConfig:
        """Build the section from a table (missing keys keep their defaults).

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        return cls(**_section_kwargs(cls, data, cls._SECTION))


# ---------------------------------------------------------------------------------------
# the whole configuration


@dataclass(frozen=True)
class L2Config:
    """The whole l2fast configuration: one section per component.

    Attributes:
        technical: The technical core (``[technical]``).
        model: The ONNX ensemble and its vote (``[model]``).
        risk: Sizing and the risk gate (``[risk]``).
        engine: The engine's bookkeeping (``[engine]``).
    """

    technical: TechnicalConfig = field(default_factory=TechnicalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    _SECTIONS: ClassVar[dict[str, type]] = {
        "technical": TechnicalConfig, "model": ModelConfig, "risk": RiskConfig, "engine": EngineConfig}

    def __post_init__(self) -> None:
        for name, cls in self._SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be a {cls.__name__}")
        vote = self.model.vote
        if vote.rsi_index >= len(self.technical.rsi_periods):
            raise ConfigError(f"model.vote.rsi_index={vote.rsi_index!r}: must be < the number of "
                              f"technical.rsi_periods ({len(self.technical.rsi_periods)})")
        for tf in vote.timeframe_weights:
            if tf not in self.technical.timeframes:
                raise ConfigError(f"{_child('model.vote.timeframe_weights', tf)}: unknown timeframe "
                                  f"(technical.timeframes: {', '.join(self.technical.timeframes)})")
        outside = sorted(set(self.technical.turbulence_symbols) - set(self.engine.symbols))
        if self.engine.symbols and outside:
            # A symbol that never gets bars would stop the index (and the gate) for good.
            raise ConfigError(f"technical.turbulence_symbols: {', '.join(outside)} not in engine.symbols")
        if self.risk.turbulence_threshold is not None and not self.technical.turbulence_symbols:
            raise ConfigError(f"risk.turbulence_threshold={self.risk.turbulence_threshold!r}: needs "
                              f"technical.turbulence_symbols (the symbols of the index)")
        if self.engine.live_stats_window < self.risk.min_trades_for_live_stats:
            raise ConfigError(f"engine.live_stats_window={self.engine.live_stats_window!r}: must be >= "
                              f"risk.min_trades_for_live_stats ({self.risk.min_trades_for_live_stats!r})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> L2Config:
        """Build a config from nested tables (``{"risk": {...}, ...}``); see the merge rules.

        Raises:
            ConfigError: A key is unknown or a value is out of range (the key path is named).
        """
        data = _table("config", data)
        _check_keys("", data, list(cls._SECTIONS), "section")
        # Sections left out keep their defaults.
        return cls(
            technical=TechnicalConfig.from_dict(data["technical"]) if "technical" in data else TechnicalConfig(),
            model=ModelConfig.from_dict(data["model"]) if "model" in data else ModelConfig(),
            risk=RiskConfig.from_dict(data["risk"]) if "risk" in data else RiskConfig(),
            engine=EngineConfig.from_dict(data["engine"]) if "engine" in data else EngineConfig(),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> L2Config:
        """Load a TOML file; a relative ``model.models_dir`` is taken relative to its folder.

        Raises:
            ConfigError: The file is unreadable or not TOML, or a key is unknown or a value
                out of range (the key path is named).
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("models_dir"), str) and model["models_dir"]:
            models_dir = Path(model["models_dir"]).expanduser()
            if not models_dir.is_absolute():
                model["models_dir"] = str((path.resolve().parent / models_dir).resolve())
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts, lists and scalars (JSON- and TOML-serialisable)."""
        return _plain(self)

    def to_toml(self) -> str:
        """The config as a TOML document that :meth:`from_toml` loads back equal."""
        lines: list[str] = []
        for name, table in self.to_dict().items():
            _write_table(lines, (name,), table)
        return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        # JSON's escapes are a subset of TOML basic strings'; DEL is the one control
        # character JSON leaves raw and TOML forbids.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def _write_table(lines: list[str], header: tuple[str, ...], table: Mapping[str, Any]) -> None:
    # None means "not set" (e.g. risk.kelly_win_rate): TOML has no null, the key is left out.
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping) and v is not None}
    subtables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    # A header with nothing under it is only needed to keep an empty table.
    if scalars or not subtables:
        if lines:
            lines.append("")
        lines.append(f"[{'.'.join(map(_key, header))}]")
        lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
    for key, sub in subtables.items():
        _write_table(lines, (*header, key), sub)
