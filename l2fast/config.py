"""Configuration of l2fast's components, validated on construction.

Unknown keys and out-of-range values raise :class:`l2fast.errors.ConfigError` naming the
key path (e.g. ``technical.levels.merge_tol``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from l2fast.bars import parse_timeframe
from l2fast.errors import ConfigError


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
            (see :class:`l2fast.technical.SupportResistance`).
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
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "levels":
                levels = _levels_defaults()
                for lkey, lvalue in dict(value).items():
                    if lkey not in levels:
                        raise ConfigError(f"{path}.levels.{lkey}: unknown key (known: {', '.join(sorted(levels))})")
                    levels[lkey] = lvalue
                kwargs[key] = levels
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None

    def _validate(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 2) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")

        if not self.timeframes or self.timeframes[0] != "1m":
            raise ConfigError(f"timeframes={self.timeframes!r}: the first timeframe must be '1m'")
        minutes = []
        for tf in self.timeframes:
            try:
                minutes.append(parse_timeframe(tf))
            except ValueError as exc:
                raise ConfigError(f"timeframes: {exc}") from None
        if minutes != sorted(set(minutes)):
            raise ConfigError(f"timeframes={self.timeframes!r}: must be distinct and increasing")
        if not self.rsi_periods or len(self.rsi_periods) > 4:
            raise ConfigError(f"rsi_periods={self.rsi_periods!r}: give 1 to 4 periods")
        for p in self.rsi_periods:
            positive_int("rsi_periods", p)
        if len(self.macd) != 3:
            raise ConfigError(f"macd={self.macd!r}: expected (fast, slow, signal)")
        for p in self.macd:
            positive_int("macd", p)
        if self.macd[0] >= self.macd[1]:
            raise ConfigError(f"macd={self.macd!r}: fast must be shorter than slow")
        if len(self.stoch) != 3:
            raise ConfigError(f"stoch={self.stoch!r}: expected (fastk, slowk, slowd)")
        for p in self.stoch:
            positive_int("stoch", p, 1)
        for name in ("bb_period", "atr_period", "adx_period", "volume_z_period", "realized_vol_period", "donchian_period"):
            positive_int(name, getattr(self, name))
        if not (isinstance(self.bb_std, (int, float)) and 0 < self.bb_std <= 10):
            raise ConfigError(f"bb_std={self.bb_std!r}: must be in (0, 10]")
        for key in self.levels:
            if key not in _levels_defaults():
                raise ConfigError(f"levels.{key}: unknown key")

    @property
    def timeframe_minutes(self) -> tuple[int, ...]:
        """The timeframes in minutes, in configured order."""
        return tuple(parse_timeframe(tf) for tf in self.timeframes)
