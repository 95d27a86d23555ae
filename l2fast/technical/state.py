"""The per-bar technical state: every timeframe, indicator, pattern and level in one call.

:class:`TechnicalState` consumes one validated 1-minute bar per
:meth:`~TechnicalState.update` call, aggregates it into the configured higher timeframes
and refreshes every indicator of every timeframe whose bar closed, writing into one
preallocated float64 vector. Names such as ``rsi_14_1m``, ``macd_hist_5m``,
``bb_pctb_15m``, ``atr_pct_1h``, ``cdl_engulfing_5m`` or ``sr_dist_support_1h`` index that
vector; this name space is what model manifests reference.

A higher-timeframe feature changes only when that timeframe's bar closes, so the forming
bar never leaks into a feature (no look-ahead). Features are NaN until their indicator has
warmed up on that timeframe (:func:`feature_warmups` gives each name's warm-up in 1-minute
bars); ``sr_*`` prices and distances are NaN while no level exists on that side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self

from l2fast.config import TechnicalConfig
from l2fast.errors import InvalidInputError
from l2fast.technical import _features
from l2fast.technical._features import feature_names, feature_warmups

__all__ = ["ExtraFeature", "TechnicalConfig", "TechnicalState", "feature_names", "feature_warmups"]


class ExtraFeature(Protocol):
    """What the state reads of an extra feature's spec (l2fast.technical.names parses them).

    Attributes:
        name: Its name in the vector, e.g. ``"ss:rsi_30_1h"``.
        kind: ``sma``, ``ema``, ``boll``, ``macd``, ``rsi``, ``atr``, ``dx`` or ``cci``.
        periods: ``(n,)``, or ``(fast, slow, signal)`` for ``macd``.
        output: ``value``; ``mid``/``ub``/``lb`` (boll), ``macd``/``macds``/``macdh``,
            ``dx``/``pdi``/``ndi``.
        source: The bar field an ``sma`` or ``ema`` reads (``close`` for the others).
        timeframe: One of the config's timeframes.
    """

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def periods(self) -> tuple[int, ...]: ...
    @property
    def output(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def timeframe(self) -> str: ...


class TechnicalState(_features.TechnicalState):
    """The compiled technical state (``l2fast.technical._features``) over a checked config.

    Args:
        config: A :class:`~l2fast.config.TechnicalConfig` (the seed's defaults if None).
        extras: Extra features (:class:`ExtraFeature` specs), after the fixed vector.

    Raises:
        InvalidInputError: ``config`` is not a :class:`~l2fast.config.TechnicalConfig`, or
            an extra is invalid (the message names its field and value).
    """

    __slots__ = ()

    def __new__(cls, config: TechnicalConfig | None = None, extras: Sequence[ExtraFeature] = ()) -> Self:
        # The kernel imports no Python module of l2fast, so the default and the type
        # check live here; the kernel's allocation (__cinit__) receives the checked config.
        if config is None:
            config = TechnicalConfig()
        elif not isinstance(config, TechnicalConfig):
            raise InvalidInputError(f"config={config!r}: expected a TechnicalConfig")
        return super().__new__(cls, config, extras)
