"""Members' observations as columns of the one input row the engine writes per bar.

A member reads its features from a shared float32 row (each member gathers its columns,
:mod:`l2fast.models.ensemble`). The row is:

1. the technical state's vector, one column per name of
   :func:`l2fast.technical.state.feature_names` (stockstats extras included), copied as is;
2. then one column per other value a member names, each computed per bar by the engine:

   - an **account-state feature** of the bar's symbol (:data:`ACCOUNT_FEATURES`, kept by the
     risk state and moved by ``on_fill`` and the bar's mark): ``cash`` (quote currency, the
     whole account), ``holdings`` (signed position in base units: FinRL's shares),
     ``position_fraction`` (signed position value over equity), ``unrealized_pnl``;
   - **FinRL's turbulence index** ``turbulence_<tf>`` over ``technical.turbulence_symbols``
     on ``technical.turbulence_timeframe`` (the same value for every symbol; 0 until its
     window fills, as FinRL's);
   - a **past value** ``<feature>[-k]`` of a technical feature: its value k closed bars of
     its timeframe back (``rsi_30_1h[-2]``: two hours before the last closed hour's; FinRL's
     crypto env stacks such rows), NaN until k + 1 bars of that timeframe have closed
     (at most :data:`MAX_LAG` back);
   - a feature of **another symbol** (a multi-asset member's ``<feature>@<SYMBOL>``: its
     technical value, or its ``holdings``/``position_fraction``/``unrealized_pnl``), named
     ``<row name>@<SYMBOL>``; NaN until that symbol's first bar;
   - a **scaled feature**: a technical or account value times the manifest's
     ``feature_scales`` factor for it, named ``<name>*<factor>`` in the row (FinRL's
     ``env_stocktrading_np`` feeds cash * 2^-12 and indicators * 2^-7; the crypto env cash *
     2^-18 and holdings * 2^-3). The product is taken in float64 then rounded once to float32
     with the rest of the row, so a power-of-two factor gives exactly the float32 of the env's
     own scaled value.

:func:`row_layout` gives the row's names and the engine's program for part 2.

A **multi-asset member** (FinRL's multi-ticker ``StockTradingEnv``) names every feature but
``cash`` with its symbol, and its Box action has one dimension per symbol, in the order of
:func:`member_symbols`: its manifest's ``finrl.tickers``, else the symbols in the order its
features first name them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from l2fast.config import is_symbol
from l2fast.decision._risk import ACCOUNT_FEATURES
from l2fast.errors import InvalidInputError

__all__ = ["ACCOUNT_FEATURES", "COLUMN_ACCOUNT", "COLUMN_LAG", "COLUMN_TECHNICAL", "COLUMN_TURBULENCE", "MAX_LAG",
           "RowLayout", "SYMBOL_MARK", "check_lags", "check_scales", "check_symbols", "is_turbulence", "member_symbols",
           "name_timeframe", "row_layout", "scaled_name", "split_lag", "split_scaled", "split_symbol",
           "turbulence_name", "turbulence_timeframe"]

#: Program entry kinds: the column reads the technical vector, the account state, or the
#: turbulence index.
COLUMN_TECHNICAL = 0
COLUMN_ACCOUNT = 1
COLUMN_TURBULENCE = 2
COLUMN_LAG = 3

#: The furthest back ``<feature>[-k]`` may read (closed bars of its timeframe).
MAX_LAG = 1_000
_LAG = re.compile(r"(.+)\[-(\d+)\]")
_TIMEFRAME_SUFFIX = re.compile(r".+_(\d+[mhd])")


def split_lag(name: str) -> tuple[str, int]:
    """``(feature, k)`` of ``<feature>[-k]``; ``(name, 0)`` without a lag."""
    match = _LAG.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def name_timeframe(name: str) -> str | None:
    """The timeframe suffix of a technical vector name (``rsi_14_5m``, ``ss:macd_1h``)."""
    match = _TIMEFRAME_SUFFIX.fullmatch(name)
    return None if match is None else match.group(1)

_TURBULENCE = re.compile(r"turbulence_(\d+[mhd])")


def turbulence_name(name: str, timeframe: str | None = None) -> str | None:
    """``turbulence_<tf>`` for ``name`` naming FinRL's turbulence index (``turbulence`` takes
    ``timeframe``), else None."""
    if name == "turbulence":
        return None if timeframe is None else f"turbulence_{timeframe}"
    return name if _TURBULENCE.fullmatch(name) else None


def is_turbulence(name: str) -> bool:
    """Whether ``name`` names FinRL's turbulence index (``turbulence`` or ``turbulence_<tf>``)."""
    return name == "turbulence" or _TURBULENCE.fullmatch(name) is not None


def turbulence_timeframe(name: str) -> str | None:
    """The timeframe of a row name ``turbulence_<tf>`` (None for any other name)."""
    match = _TURBULENCE.fullmatch(name)
    return None if match is None else match.group(1)

_SCALE_MARK = "*"
#: Separates a feature from the symbol it is read for (``close_1h@ETH/USDT``).
SYMBOL_MARK = "@"


def split_symbol(name: str) -> tuple[str, str | None]:
    """``(feature, symbol)`` of ``<feature>@<SYMBOL>``; ``(name, None)`` without a symbol."""
    base, mark, symbol = name.partition(SYMBOL_MARK)
    return (base, symbol) if mark else (name, None)


def member_symbols(manifest: Mapping) -> tuple[str, ...]:
    """The symbols of a multi-asset member, its action dimensions' order (() for one symbol).

    ``finrl.tickers`` when the manifest has them, else the symbols in the order its
    ``feature_names`` first name them.
    """
    named = tuple(dict.fromkeys(sym for sym in (split_symbol(n)[1] for n in manifest["feature_names"])
                                if sym is not None))
    if not named:
        return ()
    finrl = manifest.get("finrl")
    if isinstance(finrl, Mapping) and isinstance(finrl.get("tickers"), list):
        return tuple(finrl["tickers"])
    return named


def scaled_name(name: str, scale: float) -> str:
    """The row's name of ``name`` times ``scale`` (``name`` itself for a scale of 1).

    Raises:
        InvalidInputError: ``scale`` is not a finite number > 0.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise InvalidInputError(f"feature_scales[{name!r}]={scale!r}: must be a finite number > 0")
    return name if scale == 1 else f"{name}{_SCALE_MARK}{float(scale)!r}"


def split_scaled(name: str) -> tuple[str, float]:
    """``(base name, scale)`` of a row name written by :func:`scaled_name`."""
    base, mark, text = name.rpartition(_SCALE_MARK)
    if not mark:
        return name, 1.0
    try:
        return base, float(text)
    except ValueError:
        return name, 1.0


@dataclass(frozen=True)
class RowLayout:
    """The engine's input row.

    Attributes:
        names: Every column's name, the technical vector's first.
        n_technical: How many of them are the technical vector's (copied as they are).
        program: Per column after those: ``(kind, index, scale, symbol)``, ``kind``
            :data:`COLUMN_TECHNICAL` (``index`` into the technical vector),
            :data:`COLUMN_ACCOUNT` (``index`` into :data:`ACCOUNT_FEATURES`),
            :data:`COLUMN_TURBULENCE` or :data:`COLUMN_LAG` (``index`` into ``lags``);
            ``symbol`` the symbol it is read for (None: the bar's).
        lags: Each past value read: ``(technical column, k, timeframe)``.
    """

    names: tuple[str, ...]
    n_technical: int
    program: tuple[tuple[int, int, float, str | None], ...]
    lags: tuple[tuple[int, int, str], ...] = ()


def row_layout(technical: Sequence[str], members: Iterable[Sequence[str]]) -> RowLayout:
    """The row holding the technical vector and every other column the members name.

    Args:
        technical: The technical state's vector names.
        members: Each member's row names (:attr:`~l2fast.models.loading.LoadedModel.vector_names`).

    Returns:
        The layout; a member name none of the module docstring's forms matches is left
        out (the ensemble reports it as unknown, with hints).
    """
    index = {name: k for k, name in enumerate(technical)}
    accounts = {name: k for k, name in enumerate(ACCOUNT_FEATURES)}
    extra: dict[str, tuple[int, int, float, str | None]] = {}
    lags: dict[tuple[int, int, str], int] = {}
    for names in members:
        for name in names:
            if name in index or name in extra:
                continue
            scaled, scale = split_scaled(name)
            lagged, symbol = split_symbol(scaled)
            base, k = split_lag(lagged)
            tf = name_timeframe(base)
            if k:
                if base in index and tf is not None and 1 <= k <= MAX_LAG:
                    lag = lags.setdefault((index[base], k, tf), len(lags))
                    extra[name] = (COLUMN_LAG, lag, scale, symbol)
                continue
            if turbulence_timeframe(base) is not None and symbol is None:
                extra[name] = (COLUMN_TURBULENCE, 0, scale, None)
            elif base in index:
                extra[name] = (COLUMN_TECHNICAL, index[base], scale, symbol)
            elif base in accounts:
                extra[name] = (COLUMN_ACCOUNT, accounts[base], scale, symbol)
    return RowLayout(tuple(technical) + tuple(extra), len(technical), tuple(extra.values()), tuple(lags))


def check_scales(scales: object, names: Sequence[str]) -> list[str]:
    """Problems of a manifest's ``feature_scales`` (a ``{feature name: factor}`` object)."""
    if not isinstance(scales, Mapping):
        return [f"feature_scales must be an object {{feature name: factor}}, got {type(scales).__name__}"]
    problems = []
    for name, scale in scales.items():
        if name not in names:
            problems.append(f"feature_scales names {name!r}, which is not in feature_names")
            continue
        try:
            scaled_name(name, scale)
        except InvalidInputError as exc:
            problems.append(str(exc))
    return problems


def check_symbols(manifest: Mapping) -> list[str]:
    """Problems of a multi-asset member's ``<feature>@<SYMBOL>`` names (none without them)."""
    names = manifest["feature_names"]
    parts = [split_symbol(n) for n in names]
    if all(sym is None for _, sym in parts):
        return []
    problems = []
    for name, (base, sym) in zip(names, parts):
        if base == "cash" or is_turbulence(base):
            if sym is not None:
                problems.append(f"feature {name!r}: {base} is not a symbol's (write {base!r})")
        elif sym is None:
            problems.append(f"feature {name!r}: in a multi-asset member every feature but cash and turbulence "
                            f"names its symbol "
                            f"('{name}@BTC/USDT')")
        elif not is_symbol(sym):
            problems.append(f"feature {name!r}: {sym!r} is not a symbol like 'BTC/USDT'")
    symbols = member_symbols(manifest)
    finrl = manifest.get("finrl")
    if isinstance(finrl, Mapping) and isinstance(finrl.get("tickers"), list):
        stray = sorted({sym for _, sym in parts if sym is not None} - set(symbols))
        if stray:
            problems.append(f"features name symbols outside finrl.tickers: {', '.join(stray)}")
    space = manifest.get("action_space")
    if not (isinstance(space, Mapping) and space.get("type") == "box" and space.get("shape") == [len(symbols)]):
        problems.append(f"a multi-asset member needs a box action with one dimension per symbol "
                        f"(shape [{len(symbols)}] for {', '.join(symbols)})")
    return problems


def check_lags(names: Sequence[str]) -> list[str]:
    """Problems of a manifest's ``<feature>[-k]`` names: a technical feature, 1 <= k <= MAX_LAG."""
    problems = []
    for name in names:
        lagged = split_symbol(name)[0]
        if "[" not in lagged:
            continue
        base, k = split_lag(lagged)
        if not 1 <= k <= MAX_LAG:
            problems.append(f"feature {name!r}: a past value is <feature>[-k] with 1 <= k <= {MAX_LAG}")
        elif base in ACCOUNT_FEATURES or is_turbulence(base):
            problems.append(f"feature {name!r}: only a technical feature has past values, not {base!r}")
    return problems
