"""Votes, consensus and confidence: the ensemble's members and the technical indicators of
every timeframe fused into one side, gated by consensus, confidence and alignment.

Every formula, with its defaults, is written out in the docstring of :mod:`l2fast.decision.voting`
(the public module); the kernels below compute them in that order. Non-finite numbers are
"unavailable": skipped, never propagated.
"""

from libc.math cimport NAN, exp, fabs, isfinite

import numpy as np
cimport numpy as cnp

from l2fast._checks cimport check_finite, check_period, check_same_length, enum_names
from l2fast.technical._features cimport (
    MAX_RSI, S_BB_PCTB, S_BB_WIDTH, S_CLOSE, S_MACD_HIST, S_RSI, S_SR_BREAKOUT,
)

from l2fast.technical._candles import CANDLESTICK_PATTERNS
from l2fast.errors import InvalidInputError

cnp.import_array()

#: Technical components, in TFVote.components order.
COMPONENTS = ("rsi_level", "rsi_divergence", "macd_cross", "macd_histogram", "bb_pctb",
              "bb_squeeze", "patterns", "sr_breakout")
# The TC_* constants index C arrays, so their enum stays anonymous and gives no names: each
# name above is its constant's lower-cased (tests/test_codes.py); the count is checked here.
if len(COMPONENTS) != N_TECH_COMPONENTS:
    raise RuntimeError("COMPONENTS must name every TC_* constant of _voting.pxd")
#: Member kinds, in MemberSpec.kind order.
MEMBER_KINDS = enum_names(globals()["MemberKindCode"], "MEMBER_", True)
#: Member statuses, in MemberVote.status order.
MEMBER_STATUSES = enum_names(globals()["MemberStatus"], "MEMBER_", True)
#: Gate codes by bit, in evaluation order.
GATE_CODES = tuple((int(bit), name[len("GATE_"):]) for name, bit in globals()["VoteGate"].__members__.items() if bit)
MAX_MEMBERS = VOTE_MAX_MEMBERS
MAX_ACTIONS = VOTE_MAX_ACTIONS
MAX_TIMEFRAMES = VOTE_MAX_TIMEFRAMES
MAX_WINDOW = VOTE_RING - 1

_DIRECTIONS = {1: "buy", -1: "sell", 0: "hold"}

# Gates compare shares of normalised weights, whose sums round in the last bits.
cdef double GATE_SLACK = 1e-9


# ---------------------------------------------------------------- small helpers

cdef inline int _side(double x, double band) noexcept nogil:
    if x > band:
        return 1
    if x < -band:
        return -1
    return 0


cdef inline double _sign(double x) noexcept nogil:
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


cdef inline double _clip(double x, double lo, double hi) noexcept nogil:
    return lo if x < lo else (hi if x > hi else x)


# ---------------------------------------------------------------- monotonic deque

cdef inline void _dq_clear(MonoDeque* d) noexcept nogil:
    d.head = 0
    d.count = 0


cdef inline int _dq_slot(const MonoDeque* d, int i) noexcept nogil:
    return (d.head + i) & (VOTE_RING - 1)


# Drop entries older than bar ``oldest`` from the front.
cdef inline void _dq_expire(MonoDeque* d, long long oldest) noexcept nogil:
    while d.count > 0 and d.bar[d.head] < oldest:
        d.head = (d.head + 1) & (VOTE_RING - 1)
        d.count -= 1


# Append, first dropping from the back every entry the new one dominates (sign +1: keys
# >= the new key, so the front is the minimum, the latest on ties; sign -1: the maximum).
cdef inline void _dq_push(MonoDeque* d, long long bar, double key, double aux,
                          double sign) noexcept nogil:
    cdef int back
    while d.count > 0:
        back = _dq_slot(d, d.count - 1)
        if sign * d.key[back] >= sign * key:
            d.count -= 1
        else:
            break
    back = _dq_slot(d, d.count)
    d.bar[back] = bar
    d.key[back] = key
    d.aux[back] = aux
    d.count += 1


# ---------------------------------------------------------------- technical votes

cdef void tech_reset(TechState* s) noexcept nogil:
    cdef int i
    _dq_clear(&s.lows)
    _dq_clear(&s.highs)
    _dq_clear(&s.widths)
    s.prev_hist = NAN
    s.last_squeeze = -1
    s.bars = 0
    for i in range(N_TECH_COMPONENTS):
        s.vote.components[i] = NAN
    s.vote.vote = NAN


cdef inline double _divergence(TechState* s, const TechParams* p, long long t,
                               double close, double rsi) noexcept nogil:
    cdef double vote = NAN
    _dq_expire(&s.lows, t - p.div_window)
    _dq_expire(&s.highs, t - p.div_window)
    if not (isfinite(close) and isfinite(rsi)):
        return NAN
    # Both deques hold the latest in-window entry, so they are empty together.
    if t >= p.div_window and s.lows.count > 0:
        vote = 0.0
        if (close < s.lows.key[s.lows.head] and rsi > s.lows.aux[s.lows.head]
                and t - s.lows.bar[s.lows.head] >= p.div_min_gap):
            vote = 1.0
        elif (close > s.highs.key[s.highs.head] and rsi < s.highs.aux[s.highs.head]
                and t - s.highs.bar[s.highs.head] >= p.div_min_gap):
            vote = -1.0
    _dq_push(&s.lows, t, close, rsi, 1.0)
    _dq_push(&s.highs, t, close, rsi, -1.0)
    return vote


cdef inline double _squeeze(TechState* s, const TechParams* p, long long t,
                            double pctb, double width) noexcept nogil:
    cdef double vote = NAN
    if isfinite(pctb) and t >= p.squeeze_window:
        vote = 0.0
        if s.last_squeeze >= 0 and t - s.last_squeeze <= p.squeeze_memory:
            if pctb > 1.0:
                vote = 1.0
            elif pctb < 0.0:
                vote = -1.0
    # The current bar may itself be a squeeze, for the bars that follow it.
    _dq_expire(&s.widths, t - p.squeeze_window + 1)
    if isfinite(width):
        _dq_push(&s.widths, t, width, 0.0, 1.0)
        if t >= p.squeeze_window - 1 and width <= (1.0 + p.squeeze_tolerance) * s.widths.key[s.widths.head]:
            s.last_squeeze = t
    return vote


cdef inline double _patterns(const TechParams* p, const double* f) noexcept nogil:
    cdef double total = 0.0, x
    cdef int k
    for k in range(N_CANDLE_PATTERNS):
        if p.pattern_weights[k] != 0.0:
            x = f[p.pattern_slot + k]
            if not isfinite(x):
                return NAN
            total += p.pattern_weights[k] * x
    return _clip(total / 100.0 / p.pattern_scale, -1.0, 1.0)


cdef void tech_step(TechState* s, const TechParams* p, const double* f) noexcept nogil:
    cdef long long t = s.bars
    cdef double rsi = f[p.rsi_slot]
    cdef double hist = f[S_MACD_HIST]
    cdef double pctb = f[S_BB_PCTB]
    cdef double sr = f[S_SR_BREAKOUT]
    cdef double prev = s.prev_hist
    cdef double* c = s.vote.components
    cdef double num = 0.0, den = 0.0
    cdef int i
    s.bars += 1

    if isfinite(rsi):
        c[TC_RSI_LEVEL] = 1.0 if rsi < p.rsi_oversold else (-1.0 if rsi > p.rsi_overbought else 0.0)
    else:
        c[TC_RSI_LEVEL] = NAN
    c[TC_RSI_DIVERGENCE] = _divergence(s, p, t, f[S_CLOSE], rsi)

    if isfinite(hist) and isfinite(prev):
        if prev <= 0.0 < hist:
            c[TC_MACD_CROSS] = 1.0
        elif prev >= 0.0 > hist:
            c[TC_MACD_CROSS] = -1.0
        else:
            c[TC_MACD_CROSS] = 0.0
        c[TC_MACD_HISTOGRAM] = 0.5 * (_sign(hist) + _sign(hist - prev))
    else:
        c[TC_MACD_CROSS] = NAN
        c[TC_MACD_HISTOGRAM] = NAN
    s.prev_hist = hist

    if isfinite(pctb):
        c[TC_BB_PCTB] = 1.0 if pctb < p.pctb_low else (-1.0 if pctb > p.pctb_high else 0.0)
    else:
        c[TC_BB_PCTB] = NAN
    c[TC_BB_SQUEEZE] = _squeeze(s, p, t, pctb, f[S_BB_WIDTH])
    c[TC_PATTERNS] = _patterns(p, f)
    c[TC_SR_BREAKOUT] = _clip(sr, -1.0, 1.0) if isfinite(sr) else NAN

    for i in range(N_TECH_COMPONENTS):
        if p.weights[i] > 0.0 and isfinite(c[i]):
            num += p.weights[i] * c[i]
            den += p.weights[i]
    s.vote.vote = num / den if den > 0.0 else NAN


cdef void voter_technical(Voter* v, int updated, const double* features) noexcept nogil:
    cdef int i
    for i in range(v.p.n_timeframes):
        if (updated >> i) & 1:
            tech_step(&v.tf[i], &v.tp, features + i * v.block_size)


# ---------------------------------------------------------------- member votes

cdef int member_eval(const MemberSpec* m, const MemberInput* x,
                     double* target, double* confidence) noexcept nogil:
    cdef int j
    cdef double qa, total
    if x.failed:
        return MEMBER_RUN_FAILED
    if m.kind == MEMBER_CONTINUOUS:
        if not isfinite(x.value):
            return MEMBER_NON_FINITE
        target[0] = _clip(x.value, -1.0, 1.0)
        confidence[0] = fabs(target[0])
        return MEMBER_OK
    for j in range(m.n_actions):
        if not isfinite(x.scores[j]):
            return MEMBER_NON_FINITE
    if x.action < 0 or x.action >= m.n_actions:
        return MEMBER_BAD_ACTION
    target[0] = m.targets[x.action]
    if m.kind == MEMBER_PROBS:
        confidence[0] = _clip(x.scores[x.action], 0.0, 1.0)
    else:
        # exp of differences to the chosen action's Q: the chosen term is exp(0) = 1, so
        # the sum is >= 1 and an overflow only drives the confidence to 0.
        qa = x.scores[x.action]
        total = 0.0
        for j in range(m.n_actions):
            total += exp((x.scores[j] - qa) / m.temperature)
        confidence[0] = 1.0 / total
    return MEMBER_OK


# ---------------------------------------------------------------- fusion and gates

cdef void voter_vote(Voter* v, const MemberInput* inputs, const double* multipliers,
                     VoteResult* out) noexcept nogil:
    cdef const VoteParams* p = &v.p
    cdef MemberVote* mv
    cdef double raw[VOTE_MAX_MEMBERS]
    cdef double total = 0.0, tnum = 0.0, tden = 0.0, anum = 0.0
    cdef double mnum = 0.0, agree = 0.0, cnum = 0.0, gnum = 0.0
    cdef double target = 0.0, conf = 0.0, tech, x
    cdef int i, k, direction, gates = 0
    v.votes += 1

    out.n_live = 0
    for i in range(p.n_members):
        mv = &out.members[i]
        mv.status = member_eval(&p.members[i], &inputs[i], &target, &conf)
        if mv.status != MEMBER_OK:
            v.failures[i] += 1
            v.last_failure[i] = mv.status
            mv.side = 0
            mv.target = 0.0
            mv.confidence = 0.0
            raw[i] = 0.0
        else:
            mv.side = _side(target, p.dead_band)
            mv.target = target
            mv.confidence = conf
            raw[i] = p.members[i].weight * multipliers[i]
            total += raw[i]
            out.n_live += 1

    out.n_timeframes_live = 0
    for k in range(p.n_timeframes):
        out.timeframes[k] = v.tf[k].vote
        x = v.tf[k].vote.vote
        if isfinite(x):
            tnum += p.tf_weights[k] * x
            tden += p.tf_weights[k]
            out.n_timeframes_live += 1
    tech = tnum / tden if tden > 0.0 else 0.0
    out.technical_score = tech

    if not total > 0.0:
        for i in range(p.n_members):
            out.members[i].weight = 0.0
        out.side = 0
        out.direction = 0
        out.gate = GATE_NO_MODEL_VOTE
        out.gates = GATE_NO_MODEL_VOTE
        out.target = 0.0
        out.score = 0.0
        out.model_score = 0.0
        out.model_confidence = 0.0
        out.technical_agreement = 0.0
        out.consensus = 0.0
        out.alignment = 0.0
        out.confidence = 0.0
        return

    # Shares are sums of raw weights divided once by the total: a subset sum of
    # non-negative terms never rounds above the full sum, so shares stay within [0, 1].
    for i in range(p.n_members):
        out.members[i].weight = raw[i] / total
        if p.voting == VOTING_WEIGHTED:
            mnum += raw[i] * out.members[i].target
        else:
            mnum += raw[i] * out.members[i].side
    out.model_score = mnum / total
    out.score = (1.0 - p.technical_weight) * out.model_score + p.technical_weight * tech
    direction = _side(out.score, p.dead_band)
    out.direction = direction

    for i in range(p.n_members):
        mv = &out.members[i]
        if mv.status == MEMBER_OK and mv.side == direction:
            agree += raw[i]
            cnum += raw[i] * mv.confidence
            gnum += raw[i] * mv.target
    out.consensus = agree / total
    out.model_confidence = cnum / agree if agree > 0.0 else 0.0
    out.target = gnum / agree if agree > 0.0 and direction != 0 else 0.0
    out.technical_agreement = 0.5 * (1.0 + direction * tech)
    for k in range(p.n_timeframes):
        x = v.tf[k].vote.vote
        if isfinite(x) and _side(x, p.dead_band) == direction:
            anum += p.tf_weights[k]
    out.alignment = anum / tden if tden > 0.0 else 0.0
    out.confidence = (p.conf_model * out.model_confidence
                      + p.conf_technical * out.technical_agreement
                      + p.conf_alignment * out.alignment) / p.conf_total

    if direction == 0:
        gates = GATE_NO_DIRECTION
    else:
        if out.consensus < p.consensus_threshold - GATE_SLACK:
            gates |= GATE_LOW_CONSENSUS
        if out.confidence < p.confidence_threshold - GATE_SLACK:
            gates |= GATE_LOW_CONFIDENCE
        if out.alignment < p.alignment_threshold - GATE_SLACK:
            gates |= GATE_LOW_ALIGNMENT
    out.gates = gates
    out.gate = gates & -gates     # lowest set bit: the first failing gate
    out.side = direction if gates == 0 else 0


# ---------------------------------------------------------------- setup

cdef int _check_capacity(object params) except -1:
    # The bounds of the C arrays, whoever built ``params``: the config owns the ranges of
    # these settings, and this keeps a section that skipped its validation from writing or
    # reading past a fixed array.
    n_members, n_timeframes = len(params.members), len(params.timeframes)
    if not 1 <= n_members <= VOTE_MAX_MEMBERS:
        raise InvalidInputError(f"members: 1 to {VOTE_MAX_MEMBERS}, got {n_members}")
    for m in params.members:
        if len(m.action_targets) > VOTE_MAX_ACTIONS:
            raise InvalidInputError(f"{m.name}.action_targets: at most {VOTE_MAX_ACTIONS}, "
                                    f"got {len(m.action_targets)}")
    if not 1 <= n_timeframes <= VOTE_MAX_TIMEFRAMES:
        raise InvalidInputError(f"timeframes: 1 to {VOTE_MAX_TIMEFRAMES}, got {n_timeframes}")
    if not 0 <= params.rsi_index < params.n_rsi <= MAX_RSI:
        raise InvalidInputError(f"rsi_index={params.rsi_index!r}: must index one of the "
                                f"{params.n_rsi} RSI periods (at most {MAX_RSI})")
    for name in ("divergence_window", "squeeze_window", "squeeze_memory"):
        check_period(getattr(params, name), 1, name)
    for name in ("divergence_window", "squeeze_window"):
        if getattr(params, name) > MAX_WINDOW:
            raise InvalidInputError(f"{name}={getattr(params, name)!r}: at most {MAX_WINDOW}")
    return 0


cdef int voter_setup(Voter* v, object params) except -1:
    # The one place the voter's structs are filled. ``params`` is read by attribute (a
    # validated l2fast.decision.voting.VotingParams): the kernel imports no Python layer.
    cdef int i, j
    members = params.members
    _check_capacity(params)
    cdef VoteParams* p = &v.p
    p.n_members = len(members)
    for i, m in enumerate(members):
        p.members[i].kind = MEMBER_KINDS.index(m.kind)
        p.members[i].weight = m.weight
        p.members[i].temperature = m.temperature
        targets = m.action_targets
        p.members[i].n_actions = len(targets)
        for j in range(VOTE_MAX_ACTIONS):
            p.members[i].targets[j] = targets[j] if j < len(targets) else 0.0
    p.voting = VOTING_WEIGHTED if params.voting == "weighted" else VOTING_MAJORITY
    p.dead_band = params.dead_band
    p.technical_weight = params.technical_weight
    p.consensus_threshold = params.consensus_threshold
    p.confidence_threshold = params.confidence_threshold
    p.alignment_threshold = params.alignment_threshold
    p.conf_model = params.confidence_weights["model"]
    p.conf_technical = params.confidence_weights["technical"]
    p.conf_alignment = params.confidence_weights["alignment"]
    p.conf_total = p.conf_model + p.conf_technical + p.conf_alignment
    p.n_timeframes = len(params.timeframes)
    for i, tf in enumerate(params.timeframes):
        p.tf_weights[i] = params.timeframe_weights[tf]

    cdef TechParams* tp = &v.tp
    for i, name in enumerate(COMPONENTS):
        tp.weights[i] = params.component_weights[name]
    for i, name in enumerate(CANDLESTICK_PATTERNS):
        tp.pattern_weights[i] = params.pattern_weights[name]
    tp.pattern_scale = params.pattern_scale
    tp.rsi_oversold = params.rsi_oversold
    tp.rsi_overbought = params.rsi_overbought
    tp.pctb_low = params.pctb_low
    tp.pctb_high = params.pctb_high
    tp.squeeze_tolerance = params.squeeze_tolerance
    tp.div_window = params.divergence_window
    tp.div_min_gap = params.divergence_min_gap
    tp.squeeze_window = params.squeeze_window
    tp.squeeze_memory = params.squeeze_memory
    tp.rsi_slot = S_RSI + params.rsi_index
    tp.pattern_slot = S_RSI + params.n_rsi
    v.block_size = S_RSI + params.n_rsi + N_CANDLE_PATTERNS
    voter_reset(v)
    return 0


cdef void voter_reset(Voter* v) noexcept nogil:
    cdef int i
    for i in range(VOTE_MAX_TIMEFRAMES):
        tech_reset(&v.tf[i])
    for i in range(VOTE_MAX_MEMBERS):
        v.failures[i] = 0
        v.last_failure[i] = MEMBER_OK
    v.votes = 0


# ---------------------------------------------------------------- Python class

cdef dict _tfvote_dict(const TFVote* t):
    return {"vote": t.vote, "components": tuple([t.components[i] for i in range(N_TECH_COMPONENTS)])}


cdef object _opt(double x):
    return x if isfinite(x) else None


cdef dict vote_dict(const VoteResult* r, tuple members, tuple timeframes):
    cdef int k
    cdef const MemberVote* mv
    by_member = {}
    for k in range(len(members)):
        mv = &r.members[k]
        by_member[members[k]] = {
            "status": MEMBER_STATUSES[mv.status], "side": mv.side, "target": mv.target,
            "confidence": mv.confidence, "weight": mv.weight}
    by_timeframe = {}
    for k in range(len(timeframes)):
        by_timeframe[timeframes[k]] = _opt(r.timeframes[k].vote)
    return {
        "direction": _DIRECTIONS[r.direction], "score": _opt(r.score),
        "model_score": _opt(r.model_score), "technical_score": _opt(r.technical_score),
        "consensus": _opt(r.consensus), "confidence": _opt(r.confidence),
        "model_confidence": _opt(r.model_confidence),
        "technical_agreement": _opt(r.technical_agreement),
        "alignment": _opt(r.alignment), "target": _opt(r.target),
        "gates": [name for bit, name in GATE_CODES if r.gates & bit],
        "members": by_member, "timeframes": by_timeframe,
    }


cdef class VoterCore:
    """The compiled voter of one symbol (see the module docstring for every formula).

    :class:`l2fast.decision.voting.Voter` is the friendly front end; this class takes plain arrays.

    Args:
        params: A validated :class:`l2fast.decision.voting.VotingParams` (read by
            attribute; the Python layer validates it).
    """

    cdef Voter _v
    cdef readonly object params
    cdef readonly int n_members
    cdef readonly int n_timeframes
    cdef readonly Py_ssize_t n_features
    cdef tuple _members
    cdef tuple _timeframes

    def __cinit__(self, params):
        voter_setup(&self._v, params)
        self.params = params
        self._members = tuple(m.name for m in params.members)
        self._timeframes = tuple(params.timeframes)
        self.n_members = self._v.p.n_members
        self.n_timeframes = self._v.p.n_timeframes
        self.n_features = self._v.block_size * self.n_timeframes

    cdef const double* _features(self, cnp.ndarray arr) except NULL:
        if arr.ndim != 1 or arr.shape[0] != self.n_features:
            raise InvalidInputError(
                f"features: expected {self.n_features} values (the technical state's vector), "
                f"got shape {(<object>arr).shape}")
        return <const double*>cnp.PyArray_DATA(arr)

    cpdef int technical(self, features, int updated=-1) except -1:
        """Advance the technical votes of the timeframes whose bar closed.

        Args:
            features: The technical state's feature vector (NaN = not warmed up yet).
            updated: Bit mask of the timeframes to advance (bit i = ``timeframes[i]``), as
                returned by ``TechnicalState.update``; -1 advances every timeframe.

        Returns:
            ``updated`` restricted to the configured timeframes.
        """
        cdef cnp.ndarray arr = np.ascontiguousarray(features, dtype=np.float64)
        cdef const double* f = self._features(arr)
        updated &= (1 << self.n_timeframes) - 1
        with nogil:
            voter_technical(&self._v, updated, f)
        return updated

    def technical_many(self, features, updated=None):
        """Advance the technical votes over a series of feature vectors.

        Args:
            features: float64 ``[n_bars, n_features]``.
            updated: int ``[n_bars]`` masks (see :meth:`technical`); None advances every
                timeframe on every row.

        Returns:
            ``(votes, components)``: float64 ``[n_bars, n_timeframes]`` and
            ``[n_bars, n_timeframes, len(COMPONENTS)]``, the state after each row.
        """
        arr = np.ascontiguousarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise InvalidInputError(f"features: expected shape [n, {self.n_features}], got {arr.shape}")
        cdef Py_ssize_t n = arr.shape[0], i
        cdef int j, k, all_tf = (1 << self.n_timeframes) - 1
        masks = np.full(n, all_tf, dtype=np.int64) if updated is None else np.ascontiguousarray(updated, dtype=np.int64)
        if masks.ndim != 1:
            raise InvalidInputError(f"updated: expected a 1-D array, got shape {masks.shape}")
        check_same_length(n, masks.shape[0], "updated")
        votes = np.empty((n, self.n_timeframes), dtype=np.float64)
        comps = np.empty((n, self.n_timeframes, N_TECH_COMPONENTS), dtype=np.float64)
        cdef const double[:, ::1] f = arr
        cdef const long long[::1] m = masks
        cdef double[:, ::1] vo = votes
        cdef double[:, :, ::1] co = comps
        if n == 0:
            return votes, comps
        with nogil:
            for i in range(n):
                voter_technical(&self._v, <int>(m[i] & all_tf), &f[i, 0])
                for j in range(self._v.p.n_timeframes):
                    vo[i, j] = self._v.tf[j].vote.vote
                    for k in range(N_TECH_COMPONENTS):
                        co[i, j, k] = self._v.tf[j].vote.components[k]
        return votes, comps

    def vote(self, failed, actions, values, scores, multipliers) -> dict:
        """One bar's vote from the members' outputs and the latest technical votes.

        Args:
            failed: bool ``[n_members]``: the member's run failed.
            actions: int ``[n_members]``: discrete action indices (ignored for continuous).
            values: float ``[n_members]``: continuous actions (ignored for discrete).
            scores: float ``[n_members, k]``, ``k <= MAX_ACTIONS``: probs / q_values in the
                first ``n_actions`` columns of each discrete member's row.
            multipliers: float ``[n_members]``: the regime's weight multipliers (>= 0).

        Returns:
            The vote as the engine's ``reasoning["vote"]`` gives it (:func:`vote_dict`).
        """
        cdef MemberInput inputs[VOTE_MAX_MEMBERS]
        cdef double mult[VOTE_MAX_MEMBERS]
        cdef VoteResult res
        cdef int i, j, n = self.n_members
        fl = np.ascontiguousarray(failed, dtype=np.bool_).reshape(-1)
        ac = np.ascontiguousarray(actions, dtype=np.int64).reshape(-1)
        va = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        sc = np.ascontiguousarray(scores, dtype=np.float64)
        mu = np.ascontiguousarray(multipliers, dtype=np.float64).reshape(-1)
        for name, arr in (("failed", fl), ("actions", ac), ("values", va), ("multipliers", mu)):
            check_same_length(n, arr.shape[0], name)
        if sc.ndim != 2 or sc.shape[0] != n or sc.shape[1] > VOTE_MAX_ACTIONS:
            raise InvalidInputError(f"scores: expected shape [{n}, <= {VOTE_MAX_ACTIONS}], got {sc.shape}")
        for i in range(n):
            check_finite(mu[i], f"multipliers[{i}]")
            if mu[i] < 0.0:
                raise InvalidInputError(f"multipliers[{i}]={float(mu[i])!r}: must be >= 0")
            if self._v.p.members[i].kind != MEMBER_CONTINUOUS and sc.shape[1] < self._v.p.members[i].n_actions:
                raise InvalidInputError(
                    f"scores[{i}]: {sc.shape[1]} columns for {self._v.p.members[i].n_actions} actions")
        cdef const unsigned char[::1] f_ = fl.view(np.uint8)
        cdef const long long[::1] a_ = ac
        cdef const double[::1] v_ = va
        cdef const double[:, ::1] s_ = sc
        for i in range(n):
            mult[i] = mu[i]
            inputs[i].failed = f_[i]
            inputs[i].action = a_[i]
            inputs[i].value = v_[i]
            for j in range(VOTE_MAX_ACTIONS):
                inputs[i].scores[j] = s_[i, j] if j < s_.shape[1] else 0.0
        voter_vote(&self._v, inputs, mult, &res)
        return vote_dict(&res, self._members, self._timeframes)

    def technical_votes(self) -> tuple:
        """The latest vote of each timeframe: a list of ``{"vote", "components"}`` dicts."""
        return tuple(_tfvote_dict(&self._v.tf[i].vote) for i in range(self.n_timeframes))

    @property
    def failures(self) -> tuple:
        """Bars each member was left out of the vote."""
        return tuple(self._v.failures[i] for i in range(self.n_members))

    @property
    def last_failures(self) -> tuple:
        """Each member's latest failure status code (0: never failed)."""
        return tuple(self._v.last_failure[i] for i in range(self.n_members))

    @property
    def votes(self) -> int:
        """Number of votes cast."""
        return self._v.votes

    cpdef void reset(self):
        """Forget the technical memory and the failure counters (parameters kept)."""
        voter_reset(&self._v)
