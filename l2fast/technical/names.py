"""Feature names as model manifests write them, resolved to the technical state's vector.

A manifest names its features in one of two name spaces (its ``feature_namespace``):

- ``"l2fast"`` (the default): the technical state's own names, ``rsi_14_1m``,
  ``macd_hist_5m``, ``bb_pctb_15m``... (:func:`l2fast.technical.state.feature_names`),
  used as they are.
- ``"stockstats"``: the names FinRL's ``FeatureEngineer`` gives stockstats' indicators,
  each with a timeframe suffix (``rsi_30_1h``, ``boll_ub_1h``, ``close_30_sma_1h``) or,
  without one, the manifest's ``timeframe``. They are computed by the stockstats-compatible
  kernels (:mod:`l2fast.technical._stockstats`, stockstats 0.6.10's conventions from a
  symbol's first bar) as extra features of the technical state, named ``ss:<name>_<tf>`` in
  its vector so that they never meet l2fast's own ``rsi_14_1m`` or ``macd_1m``, which
  follow TA-Lib's conventions. ``close_<tf>`` is the close in both name spaces.

The stockstats names understood (``<n>`` a period >= 1):

=====================================  =========================================
name                                   what
=====================================  =========================================
``close``                              the close (l2fast's ``close_<tf>``)
``rsi_<n>``                            RSI over SMMAs of rises and falls
``cci_<n>``                            commodity channel index
``dx_<n>``, ``pdi_<n>``, ``ndi_<n>``   directional movement index, +DI, -DI
``atr_<n>``                            average true range (SMMA)
``<col>_<n>_sma``, ``<col>_<n>_ema``   moving averages of ``close``, ``open``,
                                       ``high``, ``low`` or ``volume``
``boll``, ``boll_ub``, ``boll_lb``     Bollinger middle, upper, lower (20, 2 std)
``boll_<n>``, ``boll_ub_<n>``, ...     the same over ``n`` bars
``macd``, ``macds``, ``macdh``         MACD 12/26/9 line, signal, histogram
=====================================  =========================================

A name outside the table is refused with the reason, where FinRL would print the error
and leave the column out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from l2fast.errors import InvalidInputError
from l2fast.technical.bars import parse_timeframe

__all__ = ["DEFAULT_NAMESPACE", "NAMESPACES", "STOCKSTATS_PREFIX", "StockstatsFeature", "parse_stockstats",
           "resolve_features"]

#: The name spaces a manifest's ``feature_namespace`` may name.
NAMESPACES = ("l2fast", "stockstats")
#: The name space of a manifest that names none: the technical state's own names.
DEFAULT_NAMESPACE = NAMESPACES[0]
#: Prefix of the stockstats features' names in the technical state's vector.
STOCKSTATS_PREFIX = "ss:"

# stockstats 0.6.10's fixed parameters: BOLL_PERIOD, BOLL_STD_TIMES is the kernel's 2,
# and MACD's 12/26/9.
_BOLL_PERIOD = 20
_MACD_PERIODS = (12, 26, 9)
_SOURCES = ("close", "open", "high", "low", "volume")
_TIMEFRAME = re.compile(r"(.+)_(\d+[mhd])")
_ONE_PERIOD = {"rsi": ("rsi", "value"), "cci": ("cci", "value"), "atr": ("atr", "value"),
               "dx": ("dx", "dx"), "pdi": ("dx", "pdi"), "ndi": ("dx", "ndi")}
_BOLL = {"boll": "mid", "boll_ub": "ub", "boll_lb": "lb"}
_MACD = {"macd": "macd", "macds": "macds", "macdh": "macdh"}
_AVERAGE = re.compile(rf"({'|'.join(_SOURCES)})_(\d+)_(sma|ema)")
_WITH_PERIOD = re.compile(r"([a-z_]+?)_(\d+)")


@dataclass(frozen=True)
class StockstatsFeature:
    """One stockstats feature as the technical state computes it.

    Attributes:
        name: Its name in the technical state's vector (``ss:rsi_30_1h``).
        kind: The kernel: ``sma``, ``ema``, ``boll``, ``macd``, ``rsi``, ``atr``, ``dx``, ``cci``.
        periods: ``(n,)``, or MACD's ``(fast, slow, signal)``.
        output: Which of the kernel's outputs: ``value``; Bollinger ``mid``/``ub``/``lb``;
            MACD ``macd``/``macds``/``macdh``; DX ``dx``/``pdi``/``ndi``.
        source: The bar field a moving average reads (``close`` for the others).
        timeframe: The timeframe whose closed bars feed it.
    """

    name: str
    kind: str
    periods: tuple[int, ...]
    output: str
    source: str
    timeframe: str


def _period(text: str, name: str) -> int:
    n = int(text)
    if n < 1:
        raise InvalidInputError(f"feature {name!r}: period {n} must be >= 1")
    return n


def parse_stockstats(name: str, timeframe: str | None = None) -> StockstatsFeature | str:
    """The stockstats feature ``name`` names, or the l2fast name of a plain column.

    Args:
        name: A stockstats name with a timeframe suffix (``rsi_30_1h``) or, with
            ``timeframe`` given, without one (``rsi_30``).
        timeframe: The manifest's timeframe, for names without a suffix.

    Returns:
        A :class:`StockstatsFeature`, or the technical state's own name of a column both
        name spaces share (``close_1h``).

    Raises:
        InvalidInputError: No timeframe, an unknown indicator, or a period < 1; the
            message names the feature.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"feature {name!r}: must be a string")
    body, tf = name, timeframe
    match = _TIMEFRAME.fullmatch(name)
    if match is not None:
        body, tf = match.group(1), match.group(2)
    if tf is None:
        raise InvalidInputError(f"feature {name!r}: no timeframe (a suffix such as '_1h', or the manifest's "
                                f"'timeframe')")
    try:
        parse_timeframe(tf)
    except (ValueError, InvalidInputError) as exc:
        raise InvalidInputError(f"feature {name!r}: timeframe {tf!r}: {exc}") from None
    if body == "close":
        return f"close_{tf}"
    full = f"{STOCKSTATS_PREFIX}{body}_{tf}"
    if body in _BOLL:
        return StockstatsFeature(full, "boll", (_BOLL_PERIOD,), _BOLL[body], "close", tf)
    if body in _MACD:
        return StockstatsFeature(full, "macd", _MACD_PERIODS, _MACD[body], "close", tf)
    average = _AVERAGE.fullmatch(body)
    if average is not None:
        source, n, kind = average.groups()
        return StockstatsFeature(full, kind, (_period(n, name),), "value", source, tf)
    with_period = _WITH_PERIOD.fullmatch(body)
    if with_period is not None:
        head, n = with_period.groups()
        if head in _ONE_PERIOD:
            kind, output = _ONE_PERIOD[head]
            return StockstatsFeature(full, kind, (_period(n, name),), output, "close", tf)
        if head in _BOLL:
            return StockstatsFeature(full, "boll", (_period(n, name),), _BOLL[head], "close", tf)
    if body in _ONE_PERIOD:
        raise InvalidInputError(f"feature {name!r}: {body} needs a period ({body}_<n>, e.g. {body}_14)")
    raise InvalidInputError(
        f"feature {name!r}: not a stockstats name l2fast computes (rsi_<n>, cci_<n>, dx_<n>, pdi_<n>, ndi_<n>, "
        f"atr_<n>, <close|open|high|low|volume>_<n>_sma/_ema, boll[_ub|_lb][_<n>], macd, macds, macdh, close)")


def resolve_features(names: Sequence[str], namespace: str,
                     timeframe: str | None = None) -> tuple[tuple[str, ...], tuple[StockstatsFeature, ...]]:
    """A manifest's feature names as the technical state's names, and the extras they need.

    Args:
        names: The manifest's ``feature_names``, in order.
        namespace: Its ``feature_namespace`` (:data:`NAMESPACES`).
        timeframe: Its ``timeframe`` (stockstats names without a suffix use it).

    Returns:
        The vector name of each feature (same order), and the stockstats features to add
        to the technical state (each once, first use first).

    Raises:
        InvalidInputError: An unknown name space or stockstats name.
    """
    if namespace not in NAMESPACES:
        raise InvalidInputError(f"feature_namespace={namespace!r}: expected one of {list(NAMESPACES)}")
    if namespace == DEFAULT_NAMESPACE:
        return tuple(names), ()
    resolved: list[str] = []
    extras: dict[str, StockstatsFeature] = {}
    for name in names:
        feature = parse_stockstats(name, timeframe)
        if isinstance(feature, str):
            resolved.append(feature)
        else:
            resolved.append(feature.name)
            extras.setdefault(feature.name, feature)
    return tuple(resolved), tuple(extras.values())
