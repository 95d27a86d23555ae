"""The engine core: one call per 1-minute bar from the bar to L1's signal.

Every per-bar step runs on C structs owned by :class:`EngineCore` (technical state, voter,
correlation, risk state, live statistics; see _engine.pxd for the order), the members'
compiled forward included (a cimported :class:`~l2fast.models._mlp.MlpForward`); the only
Python work per bar is the returned :class:`~l2fast.signals.TacticalSignal`, whose reasoning
is a :class:`SignalReasoning`: a copy of the bar's results that builds the dict only when it
is read, and the onnxruntime call through a pre-bound io_binding for the members that do not
run compiled. :class:`l2fast.engine.generator.TacticalSignalGenerator` builds the core from
an :class:`~l2fast.config.L2Config` and hands it what it needs from the Python layer (the
symbol check, the signal constructor, the ensemble's forward and bound buffers): the core
imports nothing of l2fast but kernels and the errors.
"""

from numbers import Real

cimport cython
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from time import time_ns
from types import MemberDescriptorType

from libc.limits cimport LLONG_MAX
from libc.math cimport INFINITY, NAN, fabs, isfinite
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from l2fast.technical._aggregate cimport BarGuard, bar_check, bar_guard_init
from l2fast.technical._features cimport S_ATR, S_RET_1, S_RVOL, TechnicalState
from l2fast.decision._risk cimport (
    ACTION_EXIT, ACTION_HOLD, FillResult, Position, RISK_MAX_SYMBOLS, RiskCheck, RiskParams, RiskState,
    fill_result_dict, risk_accept, risk_account, risk_bar, risk_bar_dict, risk_check, risk_check_dict,
    risk_equity, risk_gross_exposure, risk_init, risk_on_fill, risk_open_positions,
    risk_params_fill, risk_set_symbol, STOP_TRAILING,
)
from l2fast.engine._telemetry cimport (
    EngineMetrics, MET_STAGE_DECIDE, MET_STAGE_INFERENCE, MET_STAGE_TECHNICAL, MET_STAGE_TOTAL, MET_STAGE_VOTE,
    metrics_dict, metrics_init, metrics_latency, metrics_member, metrics_now_ns, metrics_signal, metrics_vote,
)
from l2fast.models._mlp cimport MlpForward
from l2fast.engine._snapshot cimport (
    StateCodec, correl_codec, livestats_codec, risk_codec, technical_codec, turbulence_codec, voter_codec,
)
from l2fast.technical._turbulence cimport TURB_MAX_ASSETS, TurbState, turb_free, turb_init, turb_step
from l2fast.decision._sizing cimport (
    KELLY_MANIFEST, LiveStats, SIZE_OK, check_number, SizingInput, SizingParams, SizingResult, livestats_free,
    livestats_init, livestats_kelly_inputs, livestats_push, round_down_lots, sizing_compute, sizing_finrl_shares,
    sizing_params_fill, sizing_result_dict,
)
from l2fast.technical._statistics cimport CorrelState, correl_free, correl_init, correl_step
from l2fast.decision._voting cimport (
    MEMBER_CONTINUOUS, MEMBER_OK, MemberInput, TFVote, VOTE_MAX_ACTIONS, VOTE_MAX_MEMBERS, VOTE_MAX_TIMEFRAMES,
    VoteResult,
    Voter, vote_dict, voter_setup, voter_technical, voter_vote,
)

from l2fast.decision._risk import RISK_CODES
from l2fast.decision._sizing import SIZING_CODES
from l2fast.decision._voting import GATE_CODES, MEMBER_KINDS, MEMBER_STATUSES
from l2fast.errors import InvalidBarError, InvalidInputError, SnapshotError

#: Most symbols one engine follows (the risk state's fixed capacity).
MAX_SYMBOLS = RISK_MAX_SYMBOLS

_SIDES = {1: "buy", -1: "sell", 0: "hold"}
_MAX_TS = 2 ** 63

#: Every ``reasoning["code"]`` a signal can carry, numbered for the metrics' counters.
REASON_CODES = tuple(dict.fromkeys(
    ("ENTRY", "EXIT", "NO_DECISION", "STALE_DECISION", "WARM_UP", "NOT_IN_UNIVERSE", "NO_SHARES",
     "INTERNAL_INVALID_SIGNAL")
    + tuple(name for bit, name in GATE_CODES if bit) + SIZING_CODES[1:] + RISK_CODES[1:]))
#: The risk gate's denial codes among them.
DENIAL_CODES = frozenset(RISK_CODES[1:])
_CODE_INDEX = {name: k for k, name in enumerate(REASON_CODES)}
# The reasoning code of each gate bit, sizing code and risk code (-1: none).
# C tables, so that a bar's decision reads no Python container.
cdef enum:
    _CODE_TABLE = 64
cdef int _gate_code[_CODE_TABLE]     # by the gate bit's position
cdef int _sizing_code[_CODE_TABLE]
cdef int _risk_code[_CODE_TABLE]
if len(SIZING_CODES) > _CODE_TABLE or len(RISK_CODES) > _CODE_TABLE or max(b for b, _ in GATE_CODES) >> _CODE_TABLE:
    raise ImportError(f"more reason codes than the engine's tables hold ({_CODE_TABLE})")
for _bit, _name in GATE_CODES:
    _gate_code[_bit.bit_length() - 1] = _CODE_INDEX[_name]
for _k, _name in enumerate(SIZING_CODES):
    _sizing_code[_k] = _CODE_INDEX.get(_name, -1)
for _k, _name in enumerate(RISK_CODES):
    _risk_code[_k] = _CODE_INDEX.get(_name, -1)

cdef extern from *:
    int __builtin_ctz(unsigned int x) nogil
cdef int _NO_DECISION = _CODE_INDEX["NO_DECISION"]
cdef int _STALE_DECISION = _CODE_INDEX["STALE_DECISION"]
cdef int _WARM_UP = _CODE_INDEX["WARM_UP"]
cdef int _NOT_IN_UNIVERSE = _CODE_INDEX["NOT_IN_UNIVERSE"]
cdef int _NO_SHARES = _CODE_INDEX["NO_SHARES"]
cdef int _ENTRY = _CODE_INDEX["ENTRY"]
cdef int _EXIT = _CODE_INDEX["EXIT"]
cdef int _INTERNAL_INVALID_SIGNAL = _CODE_INDEX["INTERNAL_INVALID_SIGNAL"]

#: The slots the engine sets on a signal it makes (TacticalSignal's fields but the two it
#: builds on first access, reasoning and signal_id, and the slot of the lazy reasoning).
SIGNAL_SLOTS = ("symbol", "side", "qty", "confidence", "consensus", "stop_loss", "take_profit", "ts_ms", "_lazy")
cdef tuple _NO_ARGS = ()

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
        int flags
    int T_OBJECT_EX
    int READONLY

cdef extern from *:
    # CPython's slot descriptor (a member_descriptor): where its slot lives in an instance.
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef enum:  # SIGNAL_SLOTS, in order
    _SLOT_SYMBOL, _SLOT_SIDE, _SLOT_QTY, _SLOT_CONFIDENCE, _SLOT_CONSENSUS, _SLOT_STOP, _SLOT_TP, _SLOT_TS, _SLOT_LAZY
    _N_SIGNAL_SLOTS


if len(SIGNAL_SLOTS) != _N_SIGNAL_SLOTS:
    raise ImportError(f"SIGNAL_SLOTS has {len(SIGNAL_SLOTS)} names, the _SLOT_* enum {_N_SIGNAL_SLOTS}")


cdef inline void _put(object obj, Py_ssize_t offset, object value) noexcept:
    # What a slot descriptor's __set__ does, minus its lookups: the new reference in the
    # slot, the old one (NULL in a new object) released.
    cdef PyObject** field = <PyObject**>((<char*><PyObject*>obj) + offset)
    cdef PyObject* old = field[0]
    Py_INCREF(value)
    field[0] = <PyObject*>value
    Py_XDECREF(old)

cdef VoteResult _vr_layout
# VoteResult up to its timeframes (its last field): the part a reasoning copies in one piece.
cdef size_t _VOTE_HEAD = <size_t>(<char*>&_vr_layout.timeframes[0] - <char*>&_vr_layout)
if _VOTE_HEAD > VOTE_HEAD_ROOM or _VOTE_HEAD + VOTE_MAX_TIMEFRAMES * sizeof(TFVote) != sizeof(VoteResult):
    raise ImportError(f"VoteResult: {_VOTE_HEAD} bytes before its timeframes, or they are not its last field "
                      f"(SignalReasoning.vote_head has room for {VOTE_HEAD_ROOM}: see _engine.pxd)")


cdef enum:  # RowColumn.source: l2fast.models.observation's COLUMN_* kinds
    _COL_TECHNICAL, _COL_ACCOUNT, _COL_TURBULENCE, _COL_LAG

cdef struct RowColumn:
    # One input-row column after the technical vector (l2fast.models.observation.RowLayout).
    int source                  # _COL_*
    int index                   # technical column, AccountFeature, or lag entry
    double scale
    int symbol                  # whose value: -1 the bar's symbol, else a slot (-2: not seen yet, NaN)


cdef struct LagRing:
    # The last ``depth`` closes' values of one technical column, per symbol.
    int column
    unsigned int bit            # its timeframe's technical update bit
    int depth                   # the largest k read + 1
    int offset                  # into a symbol's lag storage


cdef inline int _pair(int a, int b) noexcept nogil:
    # Slot of the unordered pair {a, b} in the correlation table.
    return a * RISK_MAX_SYMBOLS + b if a < b else b * RISK_MAX_SYMBOLS + a


cdef object _opt(double x):
    return x if isfinite(x) else None


cdef double _number(object value, str field) except? -1:
    # A bar field as a double; anything that is not a real number is an InvalidBarError.
    if type(value) is float:
        return <double>value
    # Real numbers only (numpy scalars included): a numeric string is a caller bug.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidBarError(field, value, "must be a real number")
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        # A 400-digit integer, or a Real whose __float__ fails.
        raise InvalidBarError(field, value, "must be a real number within float range") from None


cdef double _fill_number(object value, str field, bint lo_open) except? -1:
    # A fill field as a double >= 0 (> 0 with lo_open): a bool is not a quantity.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInputError(f"{field}={value!r}: must be a number")
    try:
        float(value)
    except (OverflowError, ValueError, TypeError):
        raise InvalidInputError(f"{field}={value!r}: must be a number within float range") from None
    return check_number(value, field, 0.0, INFINITY, lo_open)


cdef str _exact_symbol(object symbol):
    # A str subclass (numpy's str_) names the same symbol as the plain str: keyed by its
    # own __hash__/__eq__ it could open a second slot of the same symbol.
    if type(symbol) is str:
        return symbol
    if isinstance(symbol, str):
        return str.__str__(symbol)
    raise InvalidInputError(f"symbol={symbol!r}: must be a string like 'BTC/USDT'")


cdef inline long long _now_ms():
    return time_ns() // 1_000_000


cdef long long _timestamp(object value, str field) except? -1:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        if 0 <= value < _MAX_TS:
            return value
    elif hasattr(value, "__index__") and not isinstance(value, bool):
        return _timestamp(value.__index__(), field)
    raise InvalidBarError(field, value, "must be epoch milliseconds (an integer >= 0)")


cdef int _slot_check(StateCodec c, void* s, const void* live) except -1:
    # The engine's own per-symbol record: the slot's invariants (_snapshot.pxd, check_fn).
    cdef const SymbolSlot* t = <const SymbolSlot*>s
    return c.expect(-1 <= t.upd.side <= 1 and 0 <= <int>t.upd.stop_move <= <int>STOP_TRAILING
                    and t.last_ts >= -1 and t.bars >= 0 and (t.bars == 0) == (t.last_ts == -1),
                    "symbol slot: position side, stop move or bar count")


@cython.final
@cython.freelist(8)
cdef class SignalReasoning:
    """A signal's reasoning, kept as the numbers of its bar until it is read.

    The engine copies the bar's vote, sizing result, risk check and risk bar update into
    it when it makes the signal (the engine's own structs change with the next bar), and
    :meth:`reasoning` builds the dict :class:`~l2fast.signals.TacticalSignal` exposes (the
    signal calls it on first access and keeps the result). Made only by the engine.
    """

    def __init__(self):
        raise TypeError("SignalReasoning is made by the engine only")

    def reasoning(self) -> dict:
        """The reasoning dict of the signal's bar (a new dict on each call)."""
        cdef int code = self.code, k
        cdef VoteResult vote
        d = {"code": REASON_CODES[code]}
        if code == _STALE_DECISION:
            d["age_ms"] = self.a
            d["limit_ms"] = self.b
        elif code == _WARM_UP:
            d["bars"] = self.a
            d["needed"] = self.b
        if self.parts & PART_VOTE:
            d["regime"] = self.regime
            # The timeframes' technical components stay unset: vote_dict reads their vote only.
            memcpy(&vote, self.vote_head, _VOTE_HEAD)
            for k in range(len(self.timeframes)):
                vote.timeframes[k].vote = self.tf_vote[k]
            d["vote"] = vote_dict(&vote, self.members, self.timeframes)
        if self.parts & PART_SIZING:
            sizing = sizing_result_dict(&self.sizing)
            if self.kelly_config:
                sizing["kelly_source"] = "config"
            d["sizing"] = sizing
        if self.parts & PART_RISK:
            risk = risk_check_dict(&self.risk)
            d["risk"] = risk
            if self.parts & PART_DENIAL:
                d["denial"] = risk["denial"]
        if self.parts & PART_POSITION:
            d["position"] = risk_bar_dict(&self.position)
        if self.parts & PART_TURBULENCE:
            d["turbulence"] = {"value": self.turbulence, "threshold": self.turbulence_threshold}
        if self.parts & PART_FINRL:
            d["finrl"] = {"requested": self.finrl_request, "members": {
                self.members[k]: {"action": self.finrl_action[k], "shares": self.finrl_shares[k]}
                for k in range(len(self.members)) if (self.finrl_members >> k) & 1}}
        if self.invalid:
            return {"code": "INTERNAL_INVALID_SIGNAL", "side": _SIDES[self.bad_side], "qty": _opt(self.bad_qty),
                    "confidence": _opt(self.bad_conf), "consensus": _opt(self.bad_cons), "was": d}
        return d

    def brief(self) -> tuple:
        """``(code, voted, denial code or None)`` of :meth:`reasoning`, without building it."""
        if self.invalid:
            return "INTERNAL_INVALID_SIGNAL", False, None
        return (REASON_CODES[self.code], bool(self.parts & PART_VOTE),
                RISK_CODES[<int>self.risk.denial.code] if self.parts & PART_DENIAL else None)

    def __reduce__(self):
        # Its signal pickles its fields with the reasoning built (dataclass __getstate__).
        raise TypeError("a SignalReasoning is not pickled: read the signal's reasoning")


cdef inline SignalReasoning _reason(int code):
    cdef SignalReasoning r = SignalReasoning.__new__(SignalReasoning)
    r.code = code
    return r


cdef class EngineCore:
    """The per-bar pipeline over compiled state (built by ``TacticalSignalGenerator``).

    Not thread-safe: one thread drives one engine (the ensemble's bound buffers are shared).
    """

    cdef RiskState _risk
    cdef LiveStats _stats
    cdef SizingParams _sizing
    cdef SymbolSlot _slots[RISK_MAX_SYMBOLS]
    cdef Voter _voter_proto
    cdef Voter* _voters
    cdef CorrelState* _corr
    cdef double _rho[RISK_MAX_SYMBOLS * RISK_MAX_SYMBOLS]
    cdef int _n_symbols
    cdef list _states
    cdef list _symbols
    cdef dict _index
    cdef object _technical_config
    cdef tuple _extras           # the technical state's extra features (see _setup)
    cdef object _risk_config
    cdef Py_ssize_t _corr_window
    cdef frozenset _allowed      # engine.symbols (empty: any symbol)
    cdef long long _max_gap      # engine.max_bar_gap_ms (0 = off: the largest gap there is)
    cdef long long _clock_lead   # engine.max_clock_lead_ms (0 = off)
    cdef long long _fill_lead    # engine.max_fill_lead_ms (0 = off)
    cdef double _fill_notional   # engine.max_fill_notional

    cdef MlpForward _forward     # the compiled members (None: none)
    cdef object _run             # the onnxruntime session's run (None: every member compiled)
    cdef object _ensemble
    cdef type _signal_type
    cdef Py_ssize_t _slot_offset[_N_SIGNAL_SLOTS]   # each SIGNAL_SLOTS slot's offset in a signal
    cdef tuple _sides            # the signal type's sides for sell, hold, buy
    cdef object _is_symbol
    cdef float* _row
    cdef Py_ssize_t _n_features  # the technical vector's columns, copied first into the row
    cdef RowColumn* _columns     # then these (account state, scaled features, other symbols')
    cdef int _n_columns
    cdef tuple _column_symbols   # each column's symbol name (None: the bar's), resolved on registration
    # Past values (<feature>[-k]): rings of a column's values at its timeframe's closes.
    cdef LagRing* _rings
    cdef int _n_rings
    cdef int _lag_width          # doubles per symbol
    cdef int* _lag_ring          # per lag entry: its ring
    cdef int* _lag_k             # per lag entry: k
    cdef double* _lag_values     # [symbol][_lag_width], NaN until pushed
    cdef int* _lag_head          # [symbol][ring]: the slot written next
    cdef const double* _outs[RISK_MAX_SYMBOLS]  # each symbol's technical vector
    cdef MemberIO _io[VOTE_MAX_MEMBERS]
    cdef int _n_members
    cdef MemberInput _inputs[VOTE_MAX_MEMBERS]
    cdef double _multipliers[VOTE_MAX_MEMBERS]
    cdef tuple _member_names
    cdef tuple _timeframes
    cdef long long _warmup

    # Cadence: member k acts on a bar whose technical update mask (bit t: timeframe t
    # closed) has a bit of _tf_bit[k]; between its decisions its last input stands.
    cdef bint _cadenced          # some member acts less often than every 1m bar
    cdef unsigned int _tf_bit[VOTE_MAX_MEMBERS]
    cdef int _forward_index[VOTE_MAX_MEMBERS]   # in the compiled forward (-1: the session's)
    cdef unsigned int _on_session               # members reading the session's outputs
    cdef int _updated[RISK_MAX_SYMBOLS]         # each symbol's last technical update mask
    cdef unsigned int _acted[RISK_MAX_SYMBOLS]  # members that decided on the symbol at least once
    cdef MemberInput* _last      # [symbol][member]: each member's last input (cadenced only)
    # Members whose input for the symbol is a decision at a close of their timeframe not yet
    # read by the symbol's decision: only those request FinRL shares (a standing vote, or
    # the first action after warm-up, does not trade again).
    cdef unsigned int _fresh[RISK_MAX_SYMBOLS]
    # Multi-asset members: the action dimension each symbol reads (-1: not the member's),
    # for the slots registered so far; a member acts once all its symbols reached the bar.
    cdef unsigned int _multi     # members with one action dimension per symbol
    cdef unsigned int _pending   # multi-asset members one of whose symbols closed their timeframe since they acted
    cdef tuple _member_symbols
    cdef int _dim[VOTE_MAX_MEMBERS][RISK_MAX_SYMBOLS]
    # FinRL's action semantics (a manifest finrl block): hmax, and the buy cost per symbol.
    cdef unsigned int _finrl
    cdef int _hmax[VOTE_MAX_MEMBERS]
    cdef tuple _finrl_tickers    # per member: (tickers, buy costs) or None
    cdef double _buy_cost[VOTE_MAX_MEMBERS][RISK_MAX_SYMBOLS]

    # FinRL's turbulence index (technical.turbulence_symbols): stepped on the first bar all
    # its symbols share after each closed a bar of its timeframe.
    cdef bint _turb_on
    cdef TurbState _turb
    cdef tuple _turb_symbols
    cdef unsigned int _turb_bit  # the timeframe's technical update bit
    cdef Py_ssize_t _turb_close  # close_<tf> in the technical vector
    cdef int _turb_n
    cdef int _turb_of[RISK_MAX_SYMBOLS]         # a slot's position in the index (-1: not in it)
    cdef int _turb_slot[TURB_MAX_ASSETS]        # each position's slot (-1: not seen yet)
    cdef unsigned int _turb_closed              # positions that closed a bar since the last step
    cdef double _turbulence      # the last value (0 before the first step, as FinRL's)
    cdef double _turb_threshold  # risk.turbulence_threshold (INFINITY: no gate)

    cdef bint _has_decision
    cdef object _decision
    cdef object _regime          # the decision's
    cdef long long _decision_ts
    cdef long long _max_age
    cdef double _target_exposure
    cdef double _appetite
    cdef double _manifest_p
    cdef double _manifest_b
    cdef bint _kelly_fixed
    cdef int _min_trades

    cdef readonly long long ensemble_failures
    cdef readonly object last_ensemble_error

    cdef EngineMetrics _metrics
    cdef long long _t_bar        # when the bar (or re-evaluation) being answered started
    cdef long long _t_mark       # when its last finished stage ended

    def __cinit__(self, *args, **kwargs):
        self._voters = <Voter*>calloc(RISK_MAX_SYMBOLS, sizeof(Voter))
        self._corr = <CorrelState*>calloc(RISK_MAX_SYMBOLS * RISK_MAX_SYMBOLS, sizeof(CorrelState))
        if self._voters == NULL or self._corr == NULL:
            raise MemoryError()
        self._states = []
        self._symbols = []
        self._index = {}
        self._decision_ts = -1
        metrics_init(&self._metrics)
        for k in range(RISK_MAX_SYMBOLS * RISK_MAX_SYMBOLS):
            self._rho[k] = NAN

    def __dealloc__(self):
        cdef int k
        if self._corr != NULL:
            for k in range(RISK_MAX_SYMBOLS * RISK_MAX_SYMBOLS):
                correl_free(&self._corr[k])
            free(self._corr)
        free(self._voters)
        turb_free(&self._turb)
        free(self._columns)
        free(self._rings)
        free(self._lag_ring)
        free(self._lag_k)
        free(self._lag_values)
        free(self._lag_head)
        free(self._last)
        livestats_free(&self._stats)

    # ------------------------------------------------------------------ setup

    def _setup(self, config, ensemble, voting_params, long long warmup_bars, signal_type, sides, is_symbol,
               extras=(), layout=None, cadence=(), symbols=(), finrl=(), turbulence=None):
        """Bind the validated parts (called once by ``TacticalSignalGenerator.__init__``).

        Args:
            config: The :class:`~l2fast.config.L2Config`.
            ensemble: The :class:`~l2fast.models.ensemble.FusedEnsemble` over the technical
                names, its members in ``voting_params``' order (its ``input_row``,
                ``forward``, ``uses_session``, ``session_run`` and ``member_buffers`` are
                used).
            voting_params: :class:`~l2fast.decision.voting.VotingParams` of the same members.
            warmup_bars: 1m bars of a symbol before its first model vote.
            signal_type: The signal class (:class:`l2fast.signals.TacticalSignal`). The
                engine makes each signal without its ``__init__`` (every field is already
                checked, see ``_emit``): it allocates one and sets the slots
                :data:`SIGNAL_SLOTS`, ``_lazy`` a :class:`SignalReasoning`; the class builds
                ``reasoning`` and ``signal_id`` on first access.
            sides: The class's side values for sell, hold and buy.
            is_symbol: Whether a ``str`` is a valid symbol (:func:`l2fast.config.is_symbol`).
            extras: The extra features each symbol's technical state computes after its
                fixed ones (the members' stockstats features, in the ensemble's order).
            layout: The input row's :class:`~l2fast.models.observation.RowLayout` (None:
                the technical vector alone): its ``n_technical`` columns are the technical
                vector, each ``program`` entry one more column computed per bar.
            cadence: Per member (vote order), the technical update bits on which it acts
                (1, the 1m bit, or empty: every bar).
            symbols: Per member, the symbols of its action dimensions (empty: it acts for
                the bar's symbol, with its first dimension); empty: none is multi-asset.
            finrl: Per member, ``(hmax, tickers, buy costs)`` of its manifest's ``finrl``
                block (FinRL's action semantics) or None; empty: none has one.
            turbulence: ``(symbols, timeframe bit, close column, window)`` of the
                turbulence index, or None (off).

        Raises:
            InvalidInputError: The ensemble's members are not the vote's, in its order.
            TypeError: ``signal_type`` lacks one of the slots.
        """
        cdef RiskParams prm
        cdef int k
        cdef const float[:, ::1] row
        cdef const float[:, ::1] floats
        cdef const long long[::1] ints
        # Zeroed first: the struct's padding bytes reach the snapshot through risk_init, and
        # two engines of one config must dump the same bytes.
        memset(&prm, 0, sizeof(prm))
        risk = config.risk
        self._technical_config = config.technical
        self._extras = tuple(extras)
        self._risk_config = risk
        self._corr_window = risk.correlation_window
        risk_params_fill(&prm, risk)
        risk_init(&self._risk, &prm, RISK_MAX_SYMBOLS, config.engine.initial_equity)
        sizing_params_fill(&self._sizing, risk)
        livestats_init(&self._stats, config.engine.live_stats_window)
        self._min_trades = risk.min_trades_for_live_stats
        self._kelly_fixed = risk.kelly_win_rate is not None
        self._max_age = config.engine.max_decision_age_ms
        self._allowed = frozenset(config.engine.symbols)
        # 0 (off) becomes a span no bar can exceed, so the per-bar test stays one comparison.
        self._max_gap = config.engine.max_bar_gap_ms or LLONG_MAX
        self._clock_lead = config.engine.max_clock_lead_ms
        self._fill_lead = config.engine.max_fill_lead_ms
        self._fill_notional = config.engine.max_fill_notional

        voter_setup(&self._voter_proto, voting_params)
        self._member_names = tuple(m.name for m in voting_params.members)
        self._timeframes = tuple(voting_params.timeframes)
        self._n_members = len(self._member_names)
        self._warmup = warmup_bars
        for k, name in enumerate(SIGNAL_SLOTS):
            # Each must be a writable object slot (a member_descriptor): the engine writes
            # it at its offset, past a frozen class's __setattr__.
            descr = getattr(signal_type, name, None)
            if (type(descr) is not MemberDescriptorType
                    or (<PyMemberDescrObject*><PyObject*>descr).d_member.type != T_OBJECT_EX
                    or (<PyMemberDescrObject*><PyObject*>descr).d_member.flags & READONLY):
                raise TypeError(f"{signal_type!r} has no writable slot {name!r}")
            self._slot_offset[k] = (<PyMemberDescrObject*><PyObject*>descr).d_member.offset
        self._signal_type = signal_type
        self._sides = tuple(sides)
        self._is_symbol = is_symbol
        buffers = tuple(ensemble.member_buffers)
        if tuple(b.name for b in buffers) != self._member_names:
            raise InvalidInputError(f"ensemble members {[b.name for b in buffers]}: expected the vote's "
                                    f"{list(self._member_names)}, in that order")
        # The typed views check dtype and layout once; the pointers stay valid while the
        # ensemble, kept below, keeps its bound buffers.
        self._ensemble = ensemble
        self._forward = ensemble.forward
        self._run = ensemble.session_run if ensemble.uses_session else None
        row = ensemble.input_row
        self._n_features = row.shape[1] if layout is None else layout.n_technical
        program = () if layout is None else tuple(layout.program)
        if self._n_features + len(program) != row.shape[1]:
            raise InvalidInputError(f"row layout: {self._n_features} technical and {len(program)} other columns, "
                                    f"the ensemble's row has {row.shape[1]}")
        self._row = <float*>&row[0, 0]
        self._columns = <RowColumn*>calloc(max(len(program), 1), sizeof(RowColumn))
        if self._columns == NULL:
            raise MemoryError()
        for k, (kind, index, scale, symbol) in enumerate(program):
            self._columns[k].source = kind
            self._columns[k].index = index
            self._columns[k].scale = scale
            self._columns[k].symbol = -1 if symbol is None else -2
        self._n_columns = len(program)
        self._column_symbols = tuple(entry[3] for entry in program)
        self._setup_lags(() if layout is None else tuple(layout.lags), tuple(config.technical.timeframes))
        symbols = tuple(tuple(s) for s in symbols) or ((),) * self._n_members
        if len(symbols) != self._n_members or any(len(s) > RISK_MAX_SYMBOLS for s in symbols):
            raise InvalidInputError(f"symbols={symbols!r}: one tuple of at most {RISK_MAX_SYMBOLS} symbols per member")
        self._member_symbols = symbols
        self._multi = 0
        for k in range(self._n_members):
            for j in range(RISK_MAX_SYMBOLS):
                self._dim[k][j] = -1
            if symbols[k]:
                self._multi |= 1u << k
        cadence = tuple(cadence) or (1,) * self._n_members
        if len(cadence) != self._n_members or any(not 0 < b < 1 << 30 for b in cadence):
            raise InvalidInputError(f"cadence={cadence!r}: one non-zero timeframe bit mask per member")
        forward_index = tuple(ensemble.forward_index)
        self._turb_threshold = INFINITY if risk.turbulence_threshold is None else risk.turbulence_threshold
        for k in range(RISK_MAX_SYMBOLS):
            self._turb_of[k] = -1
        if turbulence is not None:
            turb_symbols, bit, close, window = turbulence
            if not 1 <= len(turb_symbols) <= TURB_MAX_ASSETS:
                raise InvalidInputError(f"turbulence: 1 to {TURB_MAX_ASSETS} symbols, got {turb_symbols!r}")
            turb_init(&self._turb, len(turb_symbols), window)
            self._turb_on = True
            self._turb_symbols = tuple(turb_symbols)
            self._turb_n = len(turb_symbols)
            self._turb_bit = bit
            self._turb_close = close
            for k in range(TURB_MAX_ASSETS):
                self._turb_slot[k] = -1
        elif self._turb_threshold < INFINITY:
            raise InvalidInputError("risk.turbulence_threshold needs the turbulence index (technical.turbulence_symbols)")
        finrl = tuple(finrl) or (None,) * self._n_members
        if len(finrl) != self._n_members:
            raise InvalidInputError(f"finrl: one entry per member, got {len(finrl)}")
        self._finrl = 0
        self._finrl_tickers = tuple(None if f is None else (tuple(f[1]), tuple(f[2])) for f in finrl)
        for k in range(self._n_members):
            if finrl[k] is not None:
                self._finrl |= 1u << k
                self._hmax[k] = finrl[k][0]
        # A multi-asset member's vote stands for the symbols that did not trigger it.
        self._cadenced = any(b != 1 for b in cadence) or self._multi != 0
        self._on_session = 0
        for k in range(self._n_members):
            self._tf_bit[k] = cadence[k]
            self._forward_index[k] = forward_index[k]
            if forward_index[k] < 0:
                self._on_session |= 1u << k
        if self._cadenced:
            self._last = <MemberInput*>calloc(RISK_MAX_SYMBOLS * VOTE_MAX_MEMBERS, sizeof(MemberInput))
            if self._last == NULL:
                raise MemoryError()
        for k in range(self._n_members):
            io = &self._io[k]
            io.kind = MEMBER_KINDS.index(voting_params.members[k].kind)
            if io.kind == MEMBER_CONTINUOUS:
                floats = buffers[k].action
                io.value = &floats[0, 0]
                io.n_scores = 0
            else:
                ints = buffers[k].action
                io.action = &ints[0]
                floats = buffers[k].scores
                io.scores = &floats[0, 0]
                io.n_scores = min(floats.shape[1], VOTE_MAX_ACTIONS)
            self._multipliers[k] = 1.0

    cdef int _setup_lags(self, tuple lags, tuple timeframes) except -1:
        """One ring per lagged technical column, deep enough for its largest k."""
        cdef int k, g, n = len(lags)
        depth = {}
        for column, lag, tf in lags:
            if lag < 1 or tf not in timeframes:
                raise InvalidInputError(f"lag ({column}, {lag}, {tf!r}): k >= 1 on a configured timeframe")
            depth[column, tf] = max(depth.get((column, tf), 0), lag + 1)
        rings = list(depth)
        self._n_rings = len(rings)
        self._rings = <LagRing*>calloc(max(self._n_rings, 1), sizeof(LagRing))
        self._lag_ring = <int*>calloc(max(n, 1), sizeof(int))
        self._lag_k = <int*>calloc(max(n, 1), sizeof(int))
        if self._rings == NULL or self._lag_ring == NULL or self._lag_k == NULL:
            raise MemoryError()
        self._lag_width = 0
        for g, (column, tf) in enumerate(rings):
            self._rings[g].column = column
            self._rings[g].bit = 1u << timeframes.index(tf)
            self._rings[g].depth = depth[column, tf]
            self._rings[g].offset = self._lag_width
            self._lag_width += depth[column, tf]
        for k, (column, lag, tf) in enumerate(lags):
            self._lag_ring[k] = rings.index((column, tf))
            self._lag_k[k] = lag
        if self._n_rings:
            self._lag_values = <double*>calloc(RISK_MAX_SYMBOLS * self._lag_width, sizeof(double))
            self._lag_head = <int*>calloc(RISK_MAX_SYMBOLS * self._n_rings, sizeof(int))
            if self._lag_values == NULL or self._lag_head == NULL:
                raise MemoryError()
            for k in range(RISK_MAX_SYMBOLS * self._lag_width):
                self._lag_values[k] = NAN
        return 0

    cdef inline double _lagged(self, int s, int entry) noexcept:
        cdef const LagRing* g = &self._rings[self._lag_ring[entry]]
        cdef int head = self._lag_head[s * self._n_rings + self._lag_ring[entry]]
        return self._lag_values[s * self._lag_width + g.offset
                                + (head - 1 - self._lag_k[entry] + 2 * g.depth) % g.depth]

    cdef int _register(self, str symbol) except -1:
        """Give ``symbol`` a slot (all checks first: nothing changes on an error)."""
        cdef int i = self._n_symbols, j
        if not self._is_symbol(symbol):
            raise InvalidInputError(f"symbol={symbol!r}: must look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        if i >= RISK_MAX_SYMBOLS:
            raise InvalidInputError(f"symbol={symbol!r}: the engine follows at most {RISK_MAX_SYMBOLS} "
                                    f"symbols ({', '.join(self._symbols)})")
        state = TechnicalState(self._technical_config, self._extras)
        for j in range(i):
            correl_init(&self._corr[_pair(i, j)], self._corr_window)
        self._voters[i] = self._voter_proto
        risk_set_symbol(&self._risk, i, self._risk_config.lot_step_for(symbol),
                        self._risk_config.min_notional_for(symbol))
        slot = &self._slots[i]
        slot.in_universe = self._decision is not None and symbol in self._decision.universe
        slot.last_ts = -1
        slot.last_ret = NAN
        slot.bars = 0
        slot.upd.side = 0
        self._states.append(state)
        self._symbols.append(symbol)
        self._index[symbol] = i
        self._n_symbols = i + 1
        self._outs[i] = (<TechnicalState>state)._out
        if self._turb_on and symbol in self._turb_symbols:
            self._turb_of[i] = self._turb_symbols.index(symbol)
            self._turb_slot[self._turb_of[i]] = i
        for j in range(self._n_columns):
            if self._column_symbols[j] == symbol:
                self._columns[j].symbol = i
        for j in range(self._n_members):
            if (self._multi >> j) & 1:
                if symbol in self._member_symbols[j]:
                    self._dim[j][i] = self._member_symbols[j].index(symbol)
                # Left out of the symbol's vote until it acts for it (never, off its symbols).
                self._last[i * VOTE_MAX_MEMBERS + j].failed = True
            if (self._finrl >> j) & 1:
                tickers, costs = self._finrl_tickers[j]
                self._buy_cost[j][i] = costs[tickers.index(symbol) if symbol in tickers else 0]
        return i

    cdef int _symbol_index(self, object symbol) except -1:
        idx = self._index.get(_exact_symbol(symbol))
        if idx is None:
            raise InvalidInputError(f"symbol={symbol!r}: unknown (known: {', '.join(self._symbols) or 'none'})")
        return idx

    cdef int _admit(self, str symbol) except -1:
        """Refuse a well-formed new symbol outside ``engine.symbols`` before it takes a slot
        (L3's universe symbols got theirs when the decision was installed)."""
        if self._allowed and symbol not in self._allowed and self._is_symbol(symbol):
            raise InvalidInputError(f"symbol={symbol!r}: not in engine.symbols ({', '.join(sorted(self._allowed))}) "
                                    f"nor in L3's universe")
        return 0

    cdef long long _latest_bar(self) noexcept:
        """Open time of the engine's latest bar of any symbol (-1: none yet)."""
        cdef long long latest = -1
        cdef int k
        for k in range(self._n_symbols):
            if self._slots[k].last_ts > latest:
                latest = self._slots[k].last_ts
        return latest

    cdef int _check_clock(self, long long ts, str field, object value, bint bar) except -1:
        cdef long long now = _now_ms()
        if ts - now > self._clock_lead:
            reason = (f"more than engine.max_clock_lead_ms={self._clock_lead} ms ahead of the wall "
                      f"clock ({now})")
            if bar:
                raise InvalidBarError(field, value, reason)
            raise InvalidInputError(f"{field}={value!r}: {reason}")
        return 0

    cdef int _check_bar_time(self, int i, long long ts, object value) except -1:
        """The slow half of the bar-time bounds (the caller tested the cheap condition):
        ``ts`` within ``engine.max_bar_gap_ms`` of the symbol's previous bar (else of the
        engine's latest bar; ``i`` -1: a new symbol) and of the wall clock when live."""
        cdef long long ref = self._slots[i].last_ts if i >= 0 else -1
        whose = "the symbol's previous bar"
        if ref < 0:
            ref = self._latest_bar()
            whose = "the engine's latest bar"
        if ref >= 0 and ts - ref > self._max_gap:
            raise InvalidBarError("ts", value, f"more than engine.max_bar_gap_ms={self._max_gap} ms after "
                                               f"{whose} ({ref})")
        if self._clock_lead > 0:
            self._check_clock(ts, "ts", value, True)
        return 0

    # ------------------------------------------------------------------ L3

    def _apply_decision(self, decision, multipliers, double p, double b, double appetite):
        """Install a validated decision (``TacticalSignalGenerator`` computes the numbers).

        Args:
            decision: The :class:`~l2fast.signals.StrategicDecision`.
            multipliers: The regime's weight multiplier per member, in voter order.
            p, b: Kelly inputs from the manifests (or the fixed config values).
            appetite: The risk-appetite size multiplier.
        """
        cdef int k
        new = [s for s in decision.universe if s not in self._index]
        for symbol in new:
            if not self._is_symbol(symbol):
                raise InvalidInputError(f"universe: {symbol!r} is not a symbol")
        if self._n_symbols + len(new) > RISK_MAX_SYMBOLS:
            raise InvalidInputError(f"universe: {self._n_symbols + len(new)} symbols in all, "
                                    f"the engine follows at most {RISK_MAX_SYMBOLS}")
        for symbol in new:
            self._register(symbol)
        for k in range(self._n_members):
            self._multipliers[k] = multipliers[k]
        self._decision = decision
        self._regime = decision.regime
        self._has_decision = True
        self._decision_ts = -1 if decision.ts_ms is None else decision.ts_ms
        self._target_exposure = decision.target_exposure
        self._appetite = appetite
        self._manifest_p = p
        self._manifest_b = b
        universe = set(decision.universe)
        for k in range(self._n_symbols):
            self._slots[k].in_universe = self._symbols[k] in universe

    # ------------------------------------------------------------------ per bar

    def on_bar(self, symbol, ts_ms, open, high, low, close, volume):
        """Consume one closed 1-minute bar of ``symbol`` and return L2's signal for it.

        Args:
            symbol: Trading pair (``"BTC/USDT"``); a new symbol gets its own state.
            ts_ms: Bar open time, epoch ms UTC, on the minute grid, after the symbol's
                previous bar.
            open, high, low, close, volume: The bar.

        Returns:
            The :class:`~l2fast.signals.TacticalSignal` (a hold with ``qty=0`` whenever
            nothing should be done; ``reasoning["code"]`` says why).

        Raises:
            InvalidBarError: The bar is invalid (the field and value are named), or its
                ``ts`` is more than ``engine.max_bar_gap_ms`` after the symbol's previous
                bar (a new symbol's: the engine's latest bar) or, when
                ``engine.max_clock_lead_ms`` is set, ahead of the wall clock; the engine is
                exactly as it was.
            InvalidInputError: The symbol is malformed, one too many, or new and outside
                ``engine.symbols`` (when set); it takes no slot.
        """
        cdef long long t0 = metrics_now_ns()
        cdef long long ts = _timestamp(ts_ms, "ts")
        cdef double o = _number(open, "open")
        cdef double h = _number(high, "high")
        cdef double l = _number(low, "low")
        cdef double c = _number(close, "close")
        cdef double v = _number(volume, "volume")
        cdef TechnicalState st
        cdef BarGuard fresh
        cdef int i
        cdef SymbolSlot* slot
        idx = self._index.get(symbol) if type(symbol) is str else None
        if idx is None:
            symbol = _exact_symbol(symbol)
            idx = self._index.get(symbol)
        if idx is None:
            bar_guard_init(&fresh)
            bar_check(&fresh, ts, o, h, l, c, v)
            self._admit(symbol)
            self._check_bar_time(-1, ts, ts_ms)
            i = self._register(symbol)
        else:
            i = idx
        st = <TechnicalState>self._states[i]
        bar_check(&st._guard, ts, o, h, l, c, v)
        slot = &self._slots[i]
        # One comparison on the usual path; the rest only for a slot's first bar, a gap
        # beyond the bound, or a live engine.
        if slot.last_ts < 0 or ts - slot.last_ts > self._max_gap or self._clock_lead > 0:
            self._check_bar_time(i, ts, ts_ms)
        self._advance(i, st, ts, h, l, c, v, o)
        self._t_bar = t0
        self._t_mark = self._stage(MET_STAGE_TECHNICAL, t0)
        return self._decide(i, st, ts)

    cdef inline long long _stage(self, int stage, long long since) noexcept:
        cdef long long now = metrics_now_ns()
        metrics_latency(&self._metrics, stage, now - since)
        return now

    cdef void _advance(self, int i, TechnicalState st, long long ts, double h, double l,
                       double c, double v, double o) noexcept:
        cdef SymbolSlot* slot = &self._slots[i]
        cdef SymbolSlot* other
        cdef const double* f
        cdef int updated, j
        cdef double r, x, y
        cdef const LagRing* g
        cdef int* head
        updated = st._step(ts, o, h, l, c, v)
        self._updated[i] = updated
        f = st._out
        for j in range(self._n_rings):
            g = &self._rings[j]
            if updated & g.bit:
                head = &self._lag_head[i * self._n_rings + j]
                self._lag_values[i * self._lag_width + g.offset + head[0]] = f[g.column]
                head[0] = (head[0] + 1) % g.depth
        if self._multi:
            for j in range(self._n_members):
                if (self._multi >> j) & 1 and self._dim[j][i] >= 0 and updated & self._tf_bit[j]:
                    self._pending |= 1u << j
        slot.bars += 1
        slot.close = c
        slot.last_ts = ts
        if self._turb_on and self._turb_of[i] >= 0:
            if updated & self._turb_bit:
                self._turb_closed |= 1u << self._turb_of[i]
            if self._turb_closed == (1u << self._turb_n) - 1:
                self._step_turbulence(ts)
        r = f[S_RET_1]
        slot.last_ret = r
        if isfinite(r):
            for j in range(self._n_symbols):
                other = &self._slots[j]
                if j != i and other.last_ts == ts and isfinite(other.last_ret):
                    # The pair's x is always the lower-index symbol's return.
                    x, y = (r, other.last_ret) if i < j else (other.last_ret, r)
                    self._rho[_pair(i, j)] = correl_step(&self._corr[_pair(i, j)], x, y)
        risk_bar(&self._risk, i, ts, h, l, c, f[S_ATR], &slot.upd)
        voter_technical(&self._voters[i], updated, f)

    cdef void _infer(self, int i, const double* f):
        cdef Py_ssize_t k
        cdef int m, j
        cdef bint failed = False
        cdef MemberIO* io
        cdef MemberInput* x
        cdef RowColumn* col
        cdef unsigned int acting = (1u << self._n_members) - 1, some = 0, closing = acting
        cdef double value
        cdef int s
        if self._cadenced:
            # A member acts when its timeframe closed, and on its first bar after warm-up; a
            # multi-asset one for its own symbols only, once all of them reached this bar
            # and are warm.
            acting = 0
            closing = 0
            for m in range(self._n_members):
                if (self._multi >> m) & 1:
                    # Its symbols' closes need not come on the same bar (a missing minute):
                    # it acts on the first bar all its symbols share after one of them closed.
                    if self._all_at(m, i):
                        if (self._pending >> m) & 1:
                            closing |= 1u << m
                        elif not (self._acted[i] >> m) & 1:
                            acting |= 1u << m
                elif self._updated[i] & self._tf_bit[m]:
                    closing |= 1u << m
                elif not (self._acted[i] >> m) & 1:
                    acting |= 1u << m
            acting |= closing
            # Consumed: a re-evaluation of this bar (a new L3 decision) does not act again.
            self._updated[i] = 0
            if acting == 0:
                memcpy(self._inputs, &self._last[i * VOTE_MAX_MEMBERS], self._n_members * sizeof(MemberInput))
                return
        for k in range(self._n_features):
            self._row[k] = <float>f[k]
        for j in range(self._n_columns):
            col = &self._columns[j]
            s = i if col.symbol == -1 else col.symbol
            if col.source == _COL_TURBULENCE:
                value = self._turbulence
            elif s < 0:
                value = NAN
            elif col.source == _COL_ACCOUNT:
                value = risk_account(&self._risk, s, col.index)
            elif col.source == _COL_LAG:
                value = self._lagged(s, col.index)
            else:
                value = self._outs[s][col.index]
            self._row[self._n_features + j] = <float>(value * col.scale)
        if self._forward is not None:
            if acting == (1u << self._n_members) - 1:
                self._forward.forward()
            else:
                for m in range(self._n_members):
                    if (acting >> m) & 1 and self._forward_index[m] >= 0:
                        some |= 1u << self._forward_index[m]
                self._forward.forward_some(some)
        if self._run is not None and acting & self._on_session:
            try:
                self._run()
            except Exception as exc:  # onnxruntime raises several private exception types
                # Every member is marked failed, the compiled ones too: one bar, one status.
                failed = True
                self.ensemble_failures += 1
                self.last_ensemble_error = f"{type(exc).__name__}: {exc}"
        for m in range(self._n_members):
            x = &self._inputs[m]
            if not (acting >> m) & 1:
                x[0] = self._last[i * VOTE_MAX_MEMBERS + m]
                continue
            io = &self._io[m]
            x.failed = failed
            if (self._multi >> m) & 1:
                self._spread(m, failed, (closing >> m) & 1)
                x[0] = self._last[i * VOTE_MAX_MEMBERS + m]
                continue
            if io.kind == MEMBER_CONTINUOUS:
                x.value = io.value[0]
            else:
                x.action = io.action[0]
                for j in range(io.n_scores):
                    x.scores[j] = io.scores[j]
            if self._cadenced:
                self._last[i * VOTE_MAX_MEMBERS + m] = x[0]
        self._fresh[i] |= closing & ~self._multi
        if self._cadenced:
            self._acted[i] |= acting
            self._pending &= ~acting

    cdef void _step_turbulence(self, long long ts) noexcept:
        """One date of the turbulence index, once its symbols all reached ``ts`` (a symbol
        whose bar is still to come keeps the step for its own bar)."""
        cdef double closes[TURB_MAX_ASSETS]
        cdef int k, s
        for k in range(self._turb_n):
            s = self._turb_slot[k]
            if s < 0 or self._slots[s].last_ts != ts:
                return
            closes[k] = self._outs[s][self._turb_close]
            if not (isfinite(closes[k]) and closes[k] > 0.0):
                return
        self._turbulence = turb_step(&self._turb, closes)
        self._risk.turbulence = self._turbulence if self._turbulence >= 0.0 else 0.0
        self._turb_closed = 0

    cdef bint _all_at(self, int m, int i) noexcept:
        """Whether multi-asset member m covers symbol i and all its symbols have a bar at i's time."""
        cdef int j, n = 0
        if self._dim[m][i] < 0:
            return False
        for j in range(self._n_symbols):
            if self._dim[m][j] >= 0:
                if self._slots[j].last_ts != self._slots[i].last_ts or self._slots[j].bars < self._warmup:
                    return False
                n += 1
        return n == len(<tuple>self._member_symbols[m])

    cdef void _spread(self, int m, bint failed, bint closing) noexcept:
        """A multi-asset member's action, one dimension per symbol, as each symbol's standing
        input (a decision for each symbol's next bar when it came at a close)."""
        cdef int j
        cdef MemberInput* y
        for j in range(self._n_symbols):
            if self._dim[m][j] >= 0:
                y = &self._last[j * VOTE_MAX_MEMBERS + m]
                y.failed = failed
                y.value = self._io[m].value[self._dim[m][j]]
                self._acted[j] |= 1u << m
                if closing:
                    self._fresh[j] |= 1u << m

    cdef object _decide(self, int i, TechnicalState st, long long ts):
        cdef SymbolSlot* slot = &self._slots[i]
        cdef const double* f = st._out
        cdef VoteResult vr
        cdef RiskCheck chk
        cdef SizingInput inp
        cdef SizingResult sz
        cdef int side, pos_side = self._risk.pos[i].side
        cdef SignalReasoning r
        cdef int k
        cdef double request = INFINITY  # no FinRL request: sizing and the gate decide alone
        cdef unsigned int fresh
        if not self._has_decision:
            return self._hold(i, ts, _reason(_NO_DECISION))
        if self._max_age > 0 and self._decision_ts >= 0 and ts - self._decision_ts > self._max_age:
            r = _reason(_STALE_DECISION)
            r.a = ts - self._decision_ts
            r.b = self._max_age
            return self._hold(i, ts, r)
        if slot.bars < self._warmup:
            r = _reason(_WARM_UP)
            r.a = slot.bars
            r.b = self._warmup
            return self._hold(i, ts, r)
        self._infer(i, f)
        fresh = self._fresh[i]
        self._fresh[i] = 0
        self._t_mark = self._stage(MET_STAGE_INFERENCE, self._t_mark)
        voter_vote(&self._voters[i], self._inputs, self._multipliers, &vr)
        self._count_vote(&vr)
        self._t_mark = self._stage(MET_STAGE_VOTE, self._t_mark)
        # The reasoning keeps copies: vr, sz and chk live on this stack, slot.upd changes
        # with the next bar.
        r = _reason(-1)
        r.parts = PART_VOTE
        r.regime = self._regime
        r.members = self._member_names
        r.timeframes = self._timeframes
        memcpy(r.vote_head, &vr, _VOTE_HEAD)
        for k in range(len(self._timeframes)):
            r.tf_vote[k] = vr.timeframes[k].vote
        if pos_side != 0 and self._turbulence >= self._turb_threshold:
            # FinRL's gate: every holding is sold while the index is at or above the threshold.
            risk_check(&self._risk, i, -pos_side, 0.0, slot.close, f[S_ATR], ts, &chk)
            r.parts |= PART_RISK | PART_TURBULENCE | PART_POSITION
            r.risk = chk
            r.turbulence = self._turbulence
            r.turbulence_threshold = self._turb_threshold
            r.position = slot.upd
            r.code = _EXIT
            return self._emit(i, ts, -pos_side, chk.qty, vr.confidence, vr.consensus, NAN, NAN, r)
        if vr.side == 0:
            r.code = _gate_code[__builtin_ctz(<unsigned int>vr.gate)]  # one bit: the first failing gate
            return self._hold(i, ts, r, &vr)
        side = vr.side
        if self._finrl:
            request = self._finrl_request(i, side, &vr, r, fresh)
            if request == 0.0:
                r.code = _NO_SHARES
                return self._hold(i, ts, r, &vr)
        if pos_side != 0:
            # Against the position: an exit of all of it (at most a FinRL request); with it:
            # denied as POSITION_OPEN.
            risk_check(&self._risk, i, side, 0.0, slot.close, f[S_ATR], ts, &chk)
            if chk.action == ACTION_EXIT and request < chk.qty:
                # A partial sell of whole lots (several members' weighted shares need not be).
                chk.qty = round_down_lots(request, self._risk.lot_step[i], chk.price, INFINITY, 0.0, INFINITY,
                                          0.0, INFINITY)
                chk.notional = chk.qty * chk.price
                if chk.qty == 0.0:
                    r.code = _NO_SHARES
                    return self._hold(i, ts, r, &vr)
        else:
            if not slot.in_universe:
                r.code = _NOT_IN_UNIVERSE
                return self._hold(i, ts, r, &vr)
            self._size(i, side, &vr, f, &inp, &sz)
            r.parts |= PART_SIZING
            r.sizing = sz
            r.kelly_config = self._kelly_fixed and sz.kelly_source == KELLY_MANIFEST
            if sz.code != SIZE_OK:
                r.code = _sizing_code[<int>sz.code]
                return self._hold(i, ts, r, &vr)
            risk_check(&self._risk, i, side, min(sz.qty, request), slot.close, f[S_ATR], ts, &chk)
        r.parts |= PART_RISK
        r.risk = chk
        if chk.action == ACTION_HOLD:
            r.parts |= PART_DENIAL
            r.code = _risk_code[<int>chk.denial.code]
            return self._hold(i, ts, r, &vr)
        risk_accept(&self._risk, i, &chk, ts)
        if chk.action == ACTION_EXIT:
            r.code = _EXIT
            r.parts |= PART_POSITION
            r.position = slot.upd
            return self._emit(i, ts, side, chk.qty, vr.confidence, vr.consensus, NAN, NAN, r)
        r.code = _ENTRY
        return self._emit(i, ts, side, chk.qty, vr.confidence, vr.consensus, chk.stop,
                          chk.take_profit, r)

    cdef double _finrl_request(self, int i, int side, const VoteResult* vr, SignalReasoning r,
                               unsigned int fresh) noexcept:
        """The shares FinRL's semantics request for the vote's side on symbol i: the
        weight-averaged shares of the FinRL members voting that side (INFINITY when none
        does), 0 for those whose vote is not a fresh decision (``fresh``): FinRL trades once
        per decision. Whole shares for one member, but a sell capped by a fractional position."""
        cdef const Position* p = &self._risk.pos[i]
        cdef double held = p.qty if p.side > 0 else 0.0, total = 0.0, weights = 0.0, n
        cdef int m
        for m in range(self._n_members):
            if not (self._finrl >> m) & 1 or vr.members[m].status != MEMBER_OK or vr.members[m].side != side:
                continue
            n = 0.0
            if (fresh >> m) & 1:
                n = sizing_finrl_shares(self._inputs[m].value, self._hmax[m], self._slots[i].close, self._risk.cash,
                                        held, self._buy_cost[m][i])
            r.finrl_members |= 1u << m
            r.finrl_action[m] = self._inputs[m].value
            r.finrl_shares[m] = n
            total += vr.members[m].weight * fabs(n)
            weights += vr.members[m].weight
        if r.finrl_members == 0:
            return INFINITY
        r.parts |= PART_FINRL
        r.finrl_request = total / weights if weights > 0.0 else 0.0
        return r.finrl_request

    cdef void _count_vote(self, const VoteResult* vr) noexcept:
        cdef int k
        metrics_vote(&self._metrics, vr.confidence, vr.consensus)
        for k in range(self._n_members):
            metrics_member(&self._metrics, k, vr.members[k].status != MEMBER_OK, vr.members[k].side, vr.direction)

    cdef void _size(self, int i, int side, const VoteResult* vr, const double* f,
                    SizingInput* inp, SizingResult* out):
        cdef double others[RISK_MAX_SYMBOLS]
        cdef double notional[RISK_MAX_SYMBOLS]
        cdef double rho[RISK_MAX_SYMBOLS]
        cdef int idx[RISK_MAX_SYMBOLS]
        cdef int j, n = 0, n_open
        cdef double p, b
        for j in range(self._n_symbols):
            if j != i and self._slots[j].in_universe:
                others[n] = (<TechnicalState>self._states[j])._out[S_RVOL]
                n += 1
        n_open = risk_open_positions(&self._risk, i, idx, notional)
        for j in range(n_open):
            rho[j] = self._rho[_pair(i, idx[j])]
        inp.kelly_source = livestats_kelly_inputs(&self._stats, self._min_trades, self._manifest_p,
                                                  self._manifest_b, &p, &b)
        inp.p = p
        inp.b = b
        inp.equity = risk_equity(&self._risk)
        inp.price = self._slots[i].close
        inp.direction = side
        inp.vol = f[S_RVOL]
        inp.other_vols = others
        inp.n_other = n
        inp.open_notional = notional
        inp.open_rho = rho
        inp.n_open = n_open
        inp.target_exposure = self._target_exposure
        inp.risk_appetite = self._appetite
        inp.confidence = vr.confidence
        inp.lot_step = self._risk.lot_step[i]
        inp.min_notional = self._risk.min_notional[i]
        sizing_compute(&self._sizing, inp, out)

    # ------------------------------------------------------------------ signals

    cdef object _hold(self, int i, long long ts, SignalReasoning reasoning, const VoteResult* vr=NULL):
        cdef SymbolSlot* slot = &self._slots[i]
        cdef double conf = 0.0, cons = 0.0, stop = NAN, tp = NAN
        if vr != NULL:
            conf = vr.confidence
            cons = vr.consensus
        if slot.upd.side != 0:
            # Holding a position: the signal carries its stop and take-profit as updated
            # by this bar (trailing, breakeven).
            stop = slot.upd.stop
            tp = slot.upd.take_profit
            reasoning.parts |= PART_POSITION
            reasoning.position = slot.upd
        return self._emit(i, ts, 0, 0.0, conf, cons, stop, tp, reasoning)

    cdef object _emit(self, int i, long long ts, int side, double qty, double conf, double cons,
                      double stop, double tp, SignalReasoning reasoning):
        cdef int code = reasoning.code
        cdef long long now
        cdef Py_ssize_t* at
        # Last line of defence: L1 never sees a non-finite or out-of-range number.
        if not (isfinite(qty) and qty >= 0.0 and (qty > 0.0) == (side != 0)
                and isfinite(conf) and isfinite(cons)):
            reasoning.invalid = True
            reasoning.bad_side = side
            reasoning.bad_qty = qty
            reasoning.bad_conf = conf
            reasoning.bad_cons = cons
            code = _INTERNAL_INVALID_SIGNAL
            side, qty, conf, cons, stop, tp = 0, 0.0, 0.0, 0.0, NAN, NAN
        conf = min(max(conf, 0.0), 1.0)
        cons = min(max(cons, 0.0), 1.0)
        # One clock read ends both the decide stage and the bar.
        now = metrics_now_ns()
        metrics_latency(&self._metrics, MET_STAGE_DECIDE, now - self._t_mark)
        metrics_latency(&self._metrics, MET_STAGE_TOTAL, now - self._t_bar)
        metrics_signal(&self._metrics, side, code)
        # Allocated as object.__new__ does, its slots written where their descriptors would
        # write them, without the Python calls and the nine attribute lookups (about 1 us a
        # signal hot, more after a quiet minute).
        sig = (<PyTypeObject*>self._signal_type).tp_new(self._signal_type, <PyObject*>_NO_ARGS, NULL)
        at = self._slot_offset
        _put(sig, at[<int>_SLOT_SYMBOL], self._symbols[i])
        _put(sig, at[<int>_SLOT_SIDE], self._sides[side + 1])
        _put(sig, at[<int>_SLOT_QTY], qty)
        _put(sig, at[<int>_SLOT_CONFIDENCE], conf)
        _put(sig, at[<int>_SLOT_CONSENSUS], cons)
        _put(sig, at[<int>_SLOT_STOP], stop if isfinite(stop) and stop > 0.0 else None)
        _put(sig, at[<int>_SLOT_TP], tp if isfinite(tp) and tp > 0.0 else None)
        _put(sig, at[<int>_SLOT_TS], ts)
        _put(sig, at[<int>_SLOT_LAZY], reasoning)
        return sig

    def _evaluate(self, symbol):
        """The decision on ``symbol``'s last bar again (after a new L3 decision)."""
        cdef int i = self._symbol_index(symbol)
        if self._slots[i].bars == 0:
            return None
        self._t_bar = self._t_mark = metrics_now_ns()
        return self._decide(i, <TechnicalState>self._states[i], self._slots[i].last_ts)

    # ------------------------------------------------------------------ L1

    def on_fill(self, symbol, side, qty, price, ts_ms, fee=0.0) -> dict:
        """Book one execution reported by L1 (positions, cash, the day's PnL, trade stats).

        Args:
            symbol: A symbol the engine follows.
            side: ``"buy"`` or ``"sell"``.
            qty: Executed quantity, a finite number > 0 (not a bool).
            price: Execution price, finite and > 0.
            ts_ms: Execution time, epoch ms UTC, at most ``engine.max_fill_lead_ms`` after
                the engine's latest bar (and, when ``engine.max_clock_lead_ms`` is set, at
                most that ahead of the wall clock).
            fee: Fee paid in quote currency, finite, >= 0 and at most the fill's notional.

        Returns:
            ``{"opened", "closed", "realized", "trade_return", "position", "qty", "equity"}``.

        With ``risk.allow_short`` false a sell larger than the long position (or any sell
        while flat) is refused: spot cannot execute it, so it is a caller bug. A sell
        larger by float rounding only (1e-9 relative) closes the position exactly.

        Raises:
            InvalidInputError: A field is invalid (named with its value), the part that
                opens or adds to a position is worth more than ``engine.max_fill_notional``
                times equity, or the sell would turn a position short that may not be;
                nothing changes.
        """
        cdef int i = self._symbol_index(symbol)
        cdef int s
        cdef long long ts, latest
        cdef FillResult fr
        cdef double q, px, fe, opening
        cdef Position* p = &self._risk.pos[i]
        if side == "buy":
            s = 1
        elif side == "sell":
            s = -1
        else:
            raise InvalidInputError(f"side={side!r}: must be 'buy' or 'sell'")
        q = _fill_number(qty, "qty", True)
        px = _fill_number(price, "price", True)
        fe = _fill_number(fee, "fee", False)
        try:
            ts = _timestamp(ts_ms, "ts_ms")
        except InvalidBarError:
            raise InvalidInputError(f"ts_ms={ts_ms!r}: must be epoch milliseconds (an integer >= 0)") from None
        if not isfinite(q * px):
            raise InvalidInputError(f"qty={qty!r}, price={price!r}: the notional must be finite")
        if fe > q * px:
            raise InvalidInputError(f"fee={fee!r}: must be at most the fill's notional ({q * px:g})")
        if s < 0 and not self._risk.prm.allow_short and q > (p.qty if p.side > 0 else 0.0):
            if p.side <= 0 or q - p.qty > 1e-9 * p.qty:
                raise InvalidInputError(f"qty={qty!r}: sells more than the long position "
                                        f"({p.qty if p.side > 0 else 0.0:g}) and risk.allow_short is false")
            q = p.qty
        opening = q if p.side != -s else max(q - p.qty, 0.0)
        if opening * px > self._fill_notional * risk_equity(&self._risk):
            raise InvalidInputError(f"qty={qty!r}, price={price!r}: opens {opening * px:g} of notional, more than "
                                    f"engine.max_fill_notional={self._fill_notional:g} times equity "
                                    f"({risk_equity(&self._risk):g})")
        latest = self._latest_bar()
        if self._fill_lead > 0 and latest >= 0 and ts - latest > self._fill_lead:
            raise InvalidInputError(f"ts_ms={ts_ms!r}: more than engine.max_fill_lead_ms={self._fill_lead} ms "
                                    f"after the engine's latest bar ({latest})")
        if self._clock_lead > 0:
            self._check_clock(ts, "ts_ms", ts_ms, False)
        risk_on_fill(&self._risk, i, s, q, px, fe, ts, &fr)
        if fr.closed:
            livestats_push(&self._stats, fr.trade_return)
        return fill_result_dict(&fr)

    # ------------------------------------------------------------------ snapshots

    cdef int _codec(self, StateCodec c) except -1:
        # The walk over every per-bar state, in a fixed order (_snapshot.pxd). Parameters
        # inside the structs come back unchanged: the snapshot's config built this engine,
        # and each family's walk refuses any that differ.
        cdef int i, j
        c.same(self._n_symbols, "symbols")
        # Each slot's symbol: a state loads only in its own slot order.
        for i in range(self._n_symbols):
            c.name(self._symbols[i], f"the symbol of slot {i}")
        c.same(self._n_members, "members")
        risk_codec(c, &self._risk)
        livestats_codec(c, &self._stats)
        for i in range(self._n_symbols):
            c.struct_(&self._slots[i], sizeof(SymbolSlot), _slot_check, "symbol slot")
        for i in range(self._n_symbols):
            voter_codec(c, &self._voters[i])
        for i in range(self._n_symbols):
            for j in range(i):
                correl_codec(c, &self._corr[_pair(i, j)])
        c.raw(self._rho, sizeof(self._rho))
        for i in range(self._n_symbols):
            technical_codec(c, <TechnicalState>self._states[i])
        if self._cadenced:
            # The members' standing votes (an engine without cadence has none to keep).
            c.raw(self._updated, self._n_symbols * sizeof(int))
            c.raw(self._acted, self._n_symbols * sizeof(unsigned int))
            c.raw(&self._pending, sizeof(unsigned int))
            c.raw(self._last, self._n_symbols * VOTE_MAX_MEMBERS * sizeof(MemberInput))
            c.raw(self._fresh, self._n_symbols * sizeof(unsigned int))
        if self._n_rings:
            c.raw(self._lag_values, self._n_symbols * self._lag_width * sizeof(double))
            c.raw(self._lag_head, self._n_symbols * self._n_rings * sizeof(int))
            for i in range(self._n_symbols * self._n_rings):
                if not 0 <= self._lag_head[i] < self._rings[i % self._n_rings].depth:
                    raise SnapshotError("state does not match this engine: lag ring position")
        if self._turb_on:
            turbulence_codec(c, &self._turb)
            c.raw(&self._turbulence, sizeof(double))
            c.raw(&self._turb_closed, sizeof(unsigned int))
            if not (self._turbulence >= 0.0 and self._turb_closed < (1u << self._turb_n)):
                raise SnapshotError("state does not match this engine: turbulence value or closes")
        return 0

    def _dump_state(self) -> bytes:
        """Every per-bar state of the compiled core as bytes (:mod:`l2fast.engine.snapshot`)."""
        cdef StateCodec c = StateCodec()
        self._codec(c)
        return c.result()

    def _load_state(self, data) -> None:
        """Load :meth:`_dump_state`'s bytes into an engine built from the same config,
        models and symbols (:mod:`l2fast.engine.snapshot`), the decision already installed.

        Raises:
            SnapshotError: The bytes are truncated or do not fit this engine.
        """
        cdef StateCodec c = StateCodec(data)
        cdef StateCodec undo
        # The walk loads family by family: a refusal half-way would leave the earlier
        # families loaded. Keep the state before, and put it back on any refusal.
        before = self._dump_state()
        try:
            self._codec(c)
            c.result()
        except BaseException:
            undo = StateCodec(before)
            self._codec(undo)
            raise

    def _restore_failures(self, long long count, last_error) -> None:
        """The ensemble failure counters of a snapshot."""
        self.ensemble_failures = count
        self.last_ensemble_error = last_error

    def _register_symbols(self, symbols) -> None:
        """Give each symbol a slot in order (a snapshot's symbol order)."""
        for symbol in symbols:
            symbol = _exact_symbol(symbol)
            if symbol not in self._index:
                self._register(symbol)

    # ------------------------------------------------------------------ introspection

    @property
    def symbols(self) -> tuple:
        """The symbols followed, in the order first seen."""
        return tuple(self._symbols)

    @property
    def equity(self) -> float:
        """Cash plus open positions marked at their last price."""
        return risk_equity(&self._risk)

    @property
    def cash(self) -> float:
        """Cash in quote currency (fills and fees booked)."""
        return self._risk.cash

    @property
    def turbulence(self) -> dict | None:
        """FinRL's turbulence index: ``{"value", "dates", "threshold"}`` (dates stepped so
        far; threshold None without the gate), or None without ``technical.turbulence_symbols``."""
        if not self._turb_on:
            return None
        return {"value": self._turbulence, "dates": self._turb.steps,
                "threshold": self._turb_threshold if self._turb_threshold < INFINITY else None}

    @property
    def gross_exposure(self) -> float:
        """Sum of ``qty * mark`` over open positions."""
        return risk_gross_exposure(&self._risk)

    @property
    def entries_today(self) -> int:
        """Entries counted against ``risk.max_daily_trades`` this UTC day."""
        return self._risk.entries_today

    @property
    def halted(self) -> bool:
        """The daily loss limit was reached today (entries halted until the next UTC day)."""
        return bool(self._risk.halted)

    @property
    def trade_stats(self) -> dict:
        """The live trade statistics (Kelly inputs once ``min_trades_for_live_stats`` exist)."""
        return {"trades": self._stats.count, "wins": self._stats.wins, "losses": self._stats.losses}

    def position(self, symbol) -> dict | None:
        """The open position of ``symbol`` or None."""
        cdef int i = self._symbol_index(symbol)
        p = &self._risk.pos[i]
        if p.side == 0:
            return None
        return {"side": "long" if p.side > 0 else "short", "qty": p.qty, "entry": p.entry,
                "stop_loss": p.stop, "take_profit": p.take_profit, "r": p.r,
                "breakeven": bool(p.breakeven), "opened_ts": p.opened_ts}

    def metrics(self) -> dict:
        """Counters and latency histograms since the engine was built, and portfolio gauges.

        Returns:
            The layout of :mod:`reference.telemetry` (signals by side, counts by
            reasoning code, mean confidence and consensus of the bars that voted and their
            confidence distribution, per-member agreement with the ensemble's direction and
            failures, latency buckets and p50/p95/p99 per stage: technical, inference, vote,
            decide, total), plus ``denials`` (the risk gate's codes among ``codes``),
            ``positions`` (``active`` / ``max``), ``portfolio_heat`` (what every open
            position would lose at its stop from the last mark, over equity), ``equity``,
            ``gross_exposure``, ``halted`` and ``entries_today``. Process counters: a
            restored engine starts them at zero.
        """
        cdef int k, active = 0
        cdef double heat = 0.0, equity = risk_equity(&self._risk)
        out = metrics_dict(&self._metrics, REASON_CODES, self._member_names)
        out["denials"] = {code: n for code, n in out["codes"].items() if code in DENIAL_CODES}
        for k in range(self._n_symbols):
            p = &self._risk.pos[k]
            if p.side != 0:
                active += 1
                if isfinite(p.stop) and isfinite(self._risk.mark[k]):
                    heat += max(p.side * (self._risk.mark[k] - p.stop), 0.0) * p.qty
        out["positions"] = {"active": active, "max": self._risk.prm.max_concurrent_positions}
        out["portfolio_heat"] = heat / equity if equity > 0.0 else 0.0
        out["equity"] = equity
        out["gross_exposure"] = risk_gross_exposure(&self._risk)
        out["halted"] = bool(self._risk.halted)
        out["entries_today"] = self._risk.entries_today
        return out

    def features(self, symbol):
        """The read-only feature vector of ``symbol`` (names: ``feature_names``)."""
        return (<TechnicalState>self._states[self._symbol_index(symbol)]).values

    def member_failures(self, symbol) -> dict:
        """Bars each member was left out of ``symbol``'s vote, and its latest reason."""
        cdef int i = self._symbol_index(symbol)
        cdef int k
        return {self._member_names[k]: {
            "bars": self._voters[i].failures[k],
            "last_reason": None if self._voters[i].failures[k] == 0
            else MEMBER_STATUSES[self._voters[i].last_failure[k]]}
            for k in range(self._n_members)}

