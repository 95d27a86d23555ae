"""The tactical engine: L3's decision and the bar stream in, one signal for L1 per bar.

:class:`TacticalSignalGenerator` is what L1 embeds. Per 1-minute bar of a symbol
(:meth:`~TacticalSignalGenerator.on_bar`) the compiled core (``l2fast.engine._engine``):

1. validates the bar (:class:`~l2fast.errors.InvalidBarError` leaves everything as it
   was; a bar more than ``engine.max_bar_gap_ms`` after the symbol's previous one is
   refused too, and a new symbol outside ``engine.symbols``, when set, takes no slot) and
   updates the symbol's technical state: every timeframe, indicator, candlestick pattern
   and support/resistance level (:mod:`l2fast.technical.state`);
2. steps the rolling return correlation of every symbol pair whose bars share the minute,
   marks the portfolio, rolls the UTC day and moves the open position's stop (trailing,
   breakeven; :mod:`l2fast.decision.risk`), and advances the technical votes of the timeframes
   whose bar closed (:mod:`l2fast.decision.voting`);
3. holds, with ``reasoning["code"]`` saying why, while there is no L3 decision
   (``NO_DECISION``), the decision is older than ``engine.max_decision_age_ms``
   (``STALE_DECISION``), or the symbol has fewer bars than the members' ``lookback``
   (``WARM_UP``; a manifest without one needs the largest warm-up of its features,
   :func:`l2fast.models.loading.default_lookback`);
4. runs the member agents (compiled, or in ONE fused onnxruntime graph through io_binding);
   each gathers its manifest's columns from the shared input row: the technical vector, then
   the account state, scaled values, other symbols' values, FinRL's turbulence index and past
   values its manifest names (:mod:`l2fast.models.observation`). A member with a
   ``decision_timeframe`` runs only on the bars closing it (a multi-asset member: once all
   its symbols reached that bar) and its last vote stands in between; a bar on which no
   member acts runs no inference. A member whose output is non-finite, or all of them when
   the run fails, is left out of the bar's vote;
5. votes (weights times L3's regime multipliers, technical and multi-timeframe votes,
   consensus/confidence/alignment gates; gate names such as ``LOW_CONSENSUS`` become the
   code of a hold);
6. while FinRL's turbulence index is at or above ``risk.turbulence_threshold``, an open
   position exits whatever the vote (``EXIT``, ``reasoning["turbulence"]``). Members with a
   manifest ``finrl`` block request FinRL's shares for the voted side
   (``reasoning["finrl"]``; zero holds ``NO_SHARES``), which the steps below may only lower.
   For a passing vote against an open position: an exit of the whole position, at most the
   FinRL request (``EXIT``; exits are never blocked by the entry limits). Otherwise an entry: sized
   (:mod:`l2fast.decision.sizing`; a zero size holds with its code, e.g. ``NO_EDGE``), then gated
   (:mod:`l2fast.decision.risk`; a denial holds with its code and numbers in
   ``reasoning["denial"]``, e.g. ``{"code": "DAILY_LOSS_LIMIT", "loss": 0.052, "limit":
   0.05}``); an allowed entry is counted for the day and reserved until its fill
   (``ENTRY``). A symbol outside L3's universe may exit but not enter
   (``NOT_IN_UNIVERSE``).

Every signal carries ``reasoning`` with the vote (``reasoning["vote"]``: scores,
consensus, confidence, alignment, each member's and timeframe's vote), the sizing factors
(``reasoning["sizing"]``) and the risk check (``reasoning["risk"]``) when they ran, and the
open position (``reasoning["position"]``, whose updated stop and take-profit a hold also
carries in ``stop_loss``/``take_profit``).

L1 reports executions with :meth:`~TacticalSignalGenerator.on_fill` (before the next bar
of that symbol; a fill that could not have happened, e.g. a sell past the long position
without ``risk.allow_short`` or one far after the latest bar, is refused), which books
positions, cash, fees, the day's PnL and the closed trades whose win rate and payoff ratio
replace the manifests' in the Kelly formula once ``risk.min_trades_for_live_stats`` exist.
An entry's stop and take-profit are sent at the signal's reference price (the bar's
close); its fill re-anchors them at the same R distances from the fill price, and every
later signal of the symbol carries those levels, which L1 should adopt from the next bar on.

Kelly inputs before that: the members' manifest ``win_rate`` and ``payoff_ratio``
averaged with the regime's effective weights (``reasoning["sizing"]["kelly_source"]`` is
``"manifest"``), or ``risk.kelly_win_rate`` and ``risk.kelly_payoff_ratio`` when the
config fixes them (``"config"``); ``"live"`` once the live statistics take over. The live
statistics are the last ``engine.live_stats_window`` trades: if they show no edge, entries
hold with ``NO_EDGE`` until the window changes, which only new closed trades do.

One engine is driven by one thread. Same config, models, decisions, bars and fills give
bit-identical signals on every run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from l2fast.config import L2Config, TechnicalConfig, is_symbol
from l2fast.decision.voting import VotingParams
from l2fast.engine import snapshot as snapshot_module
from l2fast.engine._engine import MAX_SYMBOLS, EngineCore
from l2fast.errors import (
    ConfigError,
    InvalidDecisionError,
    InvalidInputError,
    L2FastError,
    ModelLoadError,
    SnapshotError,
)
from l2fast.keys import Signer
from l2fast.models.ensemble import FusedEnsemble, member_extras
from l2fast.models.loading import LoadedModel, load_model
from l2fast.models.observation import member_symbols, row_layout, split_scaled, turbulence_timeframe
from l2fast.signals import Side, StrategicDecision, TacticalSignal
from l2fast.technical.bars import parse_timeframe, timeframe_name
from l2fast.technical.state import feature_names

__all__ = ["MAX_SYMBOLS", "EngineState", "TacticalSignalGenerator"]


@dataclass(frozen=True)
class EngineState:
    """Everything an engine has learnt from its input (what a snapshot stores).

    :meth:`TacticalSignalGenerator.export_state` gives it; ``import_state`` continues
    from it, bit for bit, in an engine built from the same config and models.

    Attributes:
        symbols: The symbols followed, in slot order (the order first seen).
        decision: L3's decision in force, or None.
        ensemble_failures: Bars on which the fused ensemble's run failed.
        last_ensemble_error: The latest of those failures, or None.
        core: The compiled core's per-bar state (raw C structs, :mod:`l2fast.engine._snapshot`:
            valid only for the same compiled layout on the same kind of machine).
    """

    symbols: tuple[str, ...]
    decision: StrategicDecision | None
    ensemble_failures: int
    last_ensemble_error: str | None
    core: bytes


def _finite_number(x: object) -> TypeGuard[float]:
    """Whether a manifest's performance figure is a finite number."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _load_members(models_dir: Path, names: list[str], technical: TechnicalConfig,
                  signer: Signer | None) -> list[LoadedModel]:
    if not models_dir.is_dir():
        raise ModelLoadError("model.models_dir: not a directory", models_dir)
    missing = [n for n in names if not (models_dir / f"{n}.json").exists()]
    if missing:
        present = sorted(p.stem for p in models_dir.glob("*.json"))
        raise ModelLoadError(f"no exported model for ensemble member(s) {missing} named in model.weights "
                             f"(present: {present})", models_dir)
    # In ``names`` order, the vote's: member k of the ensemble is member k of the vote.
    return [load_model(models_dir / f"{n}.json", technical=technical, signer=signer) for n in names]


def _cadence(members: Sequence[LoadedModel], technical: TechnicalConfig, folder: Path) -> tuple[int, ...]:
    """Per member, the technical update bit of its ``decision_timeframe`` (1, the 1m bar's, without one)."""
    bits = []
    for model in members:
        tf = model.manifest.get("decision_timeframe")
        if tf is None:
            bits.append(1)
            continue
        try:
            bits.append(1 << technical.timeframes.index(timeframe_name(parse_timeframe(tf))))
        except ValueError:
            raise ModelLoadError(f"{model.name}: decision_timeframe {tf!r} is not in technical.timeframes "
                                 f"{list(technical.timeframes)}: add it there", folder) from None
    return tuple(bits)


def _turbulence(technical: TechnicalConfig, vector: Sequence[str], row: Sequence[str],
                folder: Path) -> tuple[tuple[str, ...], int, int, int] | None:
    """``(symbols, timeframe bit, close column, window)`` of the turbulence index, or None.

    Raises:
        ModelLoadError: A member reads ``turbulence_<tf>`` of an index the config lacks.
    """
    wanted = {tf for name in row if (tf := turbulence_timeframe(split_scaled(name)[0])) is not None}
    on = bool(technical.turbulence_symbols)
    if wanted and (not on or wanted != {technical.turbulence_timeframe}):
        got = f"turbulence_{technical.turbulence_timeframe}" if on else "none (technical.turbulence_symbols is empty)"
        raise ModelLoadError(f"members read {', '.join(sorted(f'turbulence_{tf}' for tf in wanted))}; the engine's "
                             f"turbulence index: {got}", folder)
    if not on:
        return None
    tf = technical.turbulence_timeframe
    return (technical.turbulence_symbols, 1 << technical.timeframes.index(tf), list(vector).index(f"close_{tf}"),
            technical.turbulence_window)


def _finrl(model: LoadedModel) -> tuple[int, list[str], list[float]] | None:
    """``(hmax, tickers, buy costs)`` of a member's manifest ``finrl`` block, or None."""
    info = model.manifest.get("finrl")
    if info is None:
        return None
    return int(info["hmax"]), list(info["tickers"]), [float(c) for c in info["buy_cost_pct"]]


class TacticalSignalGenerator(EngineCore):
    """The L2 engine: one :class:`~l2fast.signals.TacticalSignal` per bar (module docstring).

    Args:
        config: The configuration (``L2Config()`` if None: the defaults, commented in the
            shipped ``l2fast/data/l2fast.toml`` and printed by
            ``l2fast config --template defaults``).
        models_dir: Overrides ``config.model.models_dir`` (default: ``$L2FAST_MODELS_DIR``,
            else the shipped agents, package data: :func:`l2fast.data.models_dir`, i.e.
            ``l2fast/data/onnx_models``).
        model_signer: The model key's signer (:func:`l2fast.keys.load_key` with
            ``Purpose.MODEL``): every member's manifest must carry its signature
            (:func:`l2fast.models.loading.load_model`). None: signatures are not checked.
        snapshot_signer: The snapshot key's signer: every :meth:`snapshot` is signed with
            it (:mod:`l2fast.engine.snapshot`). None: snapshots are not signed.

    Raises:
        ConfigError: ``config`` is not an :class:`~l2fast.config.L2Config`, or a signer
            is another purpose's.
        ModelLoadError: A member named in ``model.weights`` has no exported model, a file
            is corrupt or does not match its manifest (SHA-256), a manifest names a
            feature the technical core does not compute (the known names are listed), or
            with ``model_signer`` a manifest is not signed with it.
    """

    def __init__(self, config: L2Config | None = None, *,
                 models_dir: str | os.PathLike[str] | None = None, model_signer: Signer | None = None,
                 snapshot_signer: Signer | None = None) -> None:
        if config is None:
            config = L2Config()
        elif not isinstance(config, L2Config):
            raise ConfigError(f"config={config!r}: expected an l2fast.config.L2Config")
        self.config = config
        #: Signs every snapshot the engine writes (None: unsigned).
        self.snapshot_signer = snapshot_module.snapshot_signer(snapshot_signer)
        folder = Path(models_dir) if models_dir is not None else config.model.resolve_models_dir()
        #: The folder the ensemble's models were loaded from.
        self.models_dir: Path = folder.resolve()
        names = list(config.model.weights)
        members = _load_members(folder, names, config.technical, model_signer)
        #: The stockstats features the members name (their manifests' ``feature_namespace``),
        #: computed by each symbol's technical state after its fixed features.
        self.extras = member_extras(members)
        try:
            self.feature_names: tuple[str, ...] = feature_names(config.technical, self.extras)
        except InvalidInputError as exc:
            # A member's stockstats feature on a timeframe technical.timeframes lacks.
            raise ModelLoadError(f"{exc}: add the timeframe to technical.timeframes", folder) from None
        #: The input row the members read: the technical vector, then the account-state and
        #: scaled columns their manifests name (:mod:`l2fast.models.observation`).
        self.row_layout = row_layout(self.feature_names, [m.vector_names for m in members])
        self.ensemble = FusedEnsemble(members, self.row_layout.names, inference=config.model.inference)
        self.manifests: dict[str, dict] = {m.name: m.manifest for m in self.ensemble.members}
        self.voting_params = VotingParams.from_config(config.model, self.manifests, config.technical)
        live = [n for n in names if config.model.weights[n] > 0]
        # FusedEnsemble accepted every member's feature names, so load_model gave each
        # manifest without a lookback its default (l2fast.models.loading.default_lookback).
        #: 1m bars a symbol needs before its first model vote (the largest member lookback).
        self.warmup_bars: int = max(int(self.manifests[n]["lookback"]) for n in live)
        self._setup(config, self.ensemble, self.voting_params, self.warmup_bars, TacticalSignal,
                    (Side.SELL, Side.HOLD, Side.BUY), is_symbol, self.extras, self.row_layout,
                    _cadence(self.ensemble.members, config.technical, folder),
                    [member_symbols(m.manifest) for m in self.ensemble.members],
                    [_finrl(m) for m in self.ensemble.members],
                    _turbulence(config.technical, self.feature_names, self.row_layout.names, folder))
        self.decision: StrategicDecision | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """The ensemble members, in vote order (``model.weights`` order)."""
        return tuple(m.name for m in self.voting_params.members)

    def observation(self, member: str) -> np.ndarray:
        """What ``member`` was last fed, in its manifest's order (float32, a copy).

        The input row as the engine last wrote it, gathered at the member's columns: the
        observation of the last bar on which any member acted (a member with a
        ``decision_timeframe`` acts only on the bars closing that timeframe).

        Raises:
            InvalidInputError: ``member`` is not an ensemble member.
        """
        columns = self.ensemble.columns.get(member)
        if columns is None:
            raise InvalidInputError(f"member={member!r}: not an ensemble member ({', '.join(self.members)})")
        return self.ensemble.input_row[0, columns].copy()

    def _kelly_inputs(self, regime: str) -> tuple[float, float]:
        risk = self.config.risk
        if risk.kelly_win_rate is not None and risk.kelly_payoff_ratio is not None:
            # RiskConfig sets both or neither.
            return risk.kelly_win_rate, risk.kelly_payoff_ratio
        weights = self.config.model.effective_weights(regime)
        p = b = 0.0
        for name, w in weights.items():
            metrics = self.manifests[name].get("performance_metrics") or {}
            win, payoff = metrics.get("win_rate"), metrics.get("payoff_ratio")
            if not (_finite_number(win) and _finite_number(payoff)):
                raise ModelLoadError("manifest performance_metrics lacks a finite win_rate and "
                                     "payoff_ratio (needed for Kelly; or set risk.kelly_win_rate and "
                                     "risk.kelly_payoff_ratio)", self.models_dir / f"{name}.json")
            p += w * win
            b += w * payoff
        return min(max(p, 0.0), 1.0), max(b, 0.0)

    def on_strategic_decision(self, decision: StrategicDecision | Mapping[str, Any]) -> None:
        """Install L3's latest decision: regime multipliers, exposure, appetite, universe.

        Args:
            decision: A :class:`~l2fast.signals.StrategicDecision` or L3's dict.

        Raises:
            InvalidDecisionError: A field is missing, unknown or out of range, the
                universe holds more than :data:`MAX_SYMBOLS` symbols in all, or ``ts_ms``
                is older than the ``ts_ms`` of the decision in force (a late or replayed
                message); the previous decision stays in force.
        """
        self._install(decision)

    def _install(self, decision: StrategicDecision | Mapping[str, Any]) -> StrategicDecision:
        """:meth:`on_strategic_decision`, returning the decision it installed."""
        if isinstance(decision, Mapping):
            decision = StrategicDecision.from_dict(decision)
        elif not isinstance(decision, StrategicDecision):
            raise InvalidDecisionError(f"invalid decision: expected a StrategicDecision or a mapping, "
                                       f"got {type(decision).__name__}")
        in_force = self.decision
        # A signed bus message can be captured and added again: an older decision must not
        # take L2 back to it. Decisions without a time (a lone process) are not ordered.
        if decision.ts_ms is not None and in_force is not None and in_force.ts_ms is not None \
                and decision.ts_ms < in_force.ts_ms:
            raise InvalidDecisionError(f"invalid decision: ts_ms={decision.ts_ms}: older than the decision in force "
                                       f"(ts_ms={in_force.ts_ms}): a late or replayed message")
        row = self.config.model.regime_multipliers[decision.regime]
        multipliers = [row[name] for name in self.members]
        p, b = self._kelly_inputs(decision.regime)
        appetite = self.config.risk.risk_appetite_multipliers[decision.risk_appetite]
        try:
            self._apply_decision(decision, multipliers, p, b, appetite)
        except ValueError as exc:
            raise InvalidDecisionError(f"invalid decision: {exc}") from None
        self.decision = decision
        return decision

    async def process_strategic_decision(self, decision: StrategicDecision | Mapping[str, Any]) -> TacticalSignal:
        """The seed's call: install ``decision`` and answer for its first universe symbol.

        The signal is the decision re-run on that symbol's latest bar under the new
        decision (it counts like any signal: an entry is reserved). Before the symbol's
        first bar the answer is a hold with code ``NO_DATA``.

        Raises:
            InvalidDecisionError: As :meth:`on_strategic_decision`.
        """
        installed = self._install(decision)
        symbol = installed.universe[0]
        signal = self._evaluate(symbol)
        if signal is None:
            return TacticalSignal.hold(symbol, installed.ts_ms or 0, {"code": "NO_DATA"})
        return signal

    def export_state(self) -> EngineState:
        """Everything the engine has learnt from its input (what :meth:`snapshot` writes)."""
        return EngineState(symbols=self.symbols, decision=self.decision,
                           ensemble_failures=self.ensemble_failures,
                           last_ensemble_error=self.last_ensemble_error, core=self._dump_state())

    def import_state(self, state: EngineState) -> None:
        """Continue from ``state`` (:meth:`export_state` of an engine with this config and models).

        Call it on a freshly built engine, before any bar, fill or decision.

        Raises:
            InvalidInputError: A symbol is malformed, or one too many.
            SnapshotError: The decision is not valid under this engine's config, or the
                core's bytes are truncated or do not fit this engine.
        """
        self._register_symbols(state.symbols)
        if state.decision is not None:
            try:
                self.on_strategic_decision(state.decision)
            except L2FastError as exc:
                raise SnapshotError(f"decision in the snapshot is not valid: {exc}") from None
        self._load_state(state.core)
        self._restore_failures(state.ensemble_failures, state.last_ensemble_error)

    def snapshot(self, path: str | os.PathLike[str]) -> Path:
        """Write the engine's whole state to ``path`` atomically (:mod:`l2fast.engine.snapshot`).

        Positions, cash, pending entries, daily counters and the loss-limit latch, live
        trade statistics, L3's decision and every indicator's state; versioned and
        checksummed, and signed with :attr:`snapshot_signer` when it is set. :meth:`restore`
        builds an engine that continues bit for bit.

        Returns:
            The path written.
        """
        return snapshot_module.snapshot(self, path, signer=self.snapshot_signer)

    @classmethod
    def restore(cls, path: str | os.PathLike[str], *, models_dir: str | os.PathLike[str] | None = None,
                signer: Signer | None = None, model_signer: Signer | None = None) -> TacticalSignalGenerator:
        """Build an engine from a :meth:`snapshot` file (its config, models and state).

        Args:
            path: The snapshot.
            models_dir: Where the models are now (default: where they were); each must
                have the snapshot's SHA-256.
            signer: The snapshot key's signer: the file must be signed with it, and the
                engine signs its own snapshots with it. None: the file must be unsigned.
            model_signer: The model key's signer (as the constructor's).

        Raises:
            SnapshotError: The file is corrupt or truncated, not signed as ``signer``
                says, was written by another build or machine, or does not fit the
                models found (or they are refused).
        """
        return snapshot_module.restore(cls, path, models_dir=models_dir, signer=signer, model_signer=model_signer)

    def metrics(self) -> dict:
        """The core's metrics (:meth:`EngineCore.metrics`) and the ensemble's inference paths.

        ``inference`` is ``{"per_bar": "compiled" | "compiled+onnxruntime" | "onnxruntime"
        (:attr:`~l2fast.models.ensemble.FusedEnsemble.inference`), "level": the compiled
        forward's level or None, "members": {name: {"path", "reason", "rows",
        "max_score_diff"}}}`` (:class:`~l2fast.models.compiled.MemberPath`).
        """
        out = super().metrics()
        ens = self.ensemble
        out["inference"] = {"per_bar": ens.inference,
                            "level": ens.compiled.level_name if ens.compiled is not None else None,
                            "members": {p.name: p.as_dict() for p in ens.paths}}
        return out

    def __repr__(self) -> str:
        return (f"TacticalSignalGenerator(members={list(self.members)}, symbols={list(self.symbols)}, "
                f"equity={self.equity:.2f}, inference={self.ensemble.inference}: {self.ensemble.describe_paths()})")
