# Contract of the engine core: one L2 step per 1-minute bar over every kernel family.
#
# Per bar of symbol i (after the bar passed bar_check on the symbol's guard, so nothing
# below can fail):
#   1. updated = TechnicalState._step(...)            (features of every timeframe)
#   2. correlation: pair (i, j) is stepped with both 1m log returns when j's last bar
#      has the same timestamp (bars of different symbols align on the minute)
#   3. risk_bar(...)                                   (day roll, marks, stops)
#   4. voter_technical(&voter[i], updated, features)
#   5. then the decision (also what process_strategic_decision re-runs on the last bar):
#      gates on the L3 decision (none, stale, symbol outside the universe for entries),
#      warm-up, the members (the compiled forward; the fused ONNX graph through io_binding
#      for those not compiled; a member with a decision timeframe only on the bars closing
#      it, its last input standing in between), voter_vote, the FinRL members' requested
#      shares (sizing_finrl_shares; zero holds NO_SHARES), then for a passing vote: an exit
#      (opposite position; at most the request) or sizing_compute + risk_check for an
#      entry (at most the request), risk_accept when allowed; while FinRL's turbulence
#      index is at or above risk.turbulence_threshold an open position exits whatever the
#      vote (and the gate denies entries with TURBULENCE); the TacticalSignal, its reasoning a SignalReasoning
#      (below) that copies the bar's results and builds the dict only when read.

from l2fast.decision._risk cimport RiskBarUpdate, RiskCheck
from l2fast.decision._sizing cimport SizingResult
from l2fast.decision._voting cimport VOTE_MAX_MEMBERS, VOTE_MAX_TIMEFRAMES, VoteResult

cdef struct MemberIO:
    # Where a member's outputs land in the fused ensemble's bound buffers (member k of the
    # ensemble is member k of the vote: FusedEnsemble holds them in vote order).
    int kind                    # voting MEMBER_* kind
    const long long* action     # discrete: int64 [1]
    const float* value          # continuous: float32 [1, d] (the first dimension is used)
    const float* scores         # discrete: float32 [1, n] probs or q_values
    int n_scores

cdef struct SymbolSlot:
    bint in_universe
    long long last_ts           # open time of the last bar (-1: none)
    double last_ret             # its 1m log return (NaN: none)
    RiskBarUpdate upd           # risk_bar of the last bar
    double close                # the last bar's close (the signal's reference price)
    long long bars

cdef enum:  # SignalReasoning.parts: which of the bar's results its reasoning holds
    PART_VOTE = 1               # "regime" and "vote"
    PART_SIZING = 2             # "sizing"
    PART_RISK = 4               # "risk"
    PART_DENIAL = 8             # "denial" (the risk check's)
    PART_POSITION = 16          # "position" (the risk bar update)
    PART_FINRL = 32             # "finrl" (FinRL members' requested shares)
    PART_TURBULENCE = 64        # "turbulence" (the gate's exit of a position)

cdef enum:
    # Room for a VoteResult's bytes before its timeframes (352 with 8 members on every
    # usual ABI); _engine.pyx refuses to import if they need more.
    VOTE_HEAD_ROOM = 352

cdef class SignalReasoning:
    # A signal's reasoning as the numbers of its bar: copied when the signal is made (the
    # engine's structs change on the next bar), the dict built by reasoning() on demand.
    cdef int code               # index in REASON_CODES
    cdef int parts              # PART_* bits
    cdef bint kelly_config      # "sizing"'s kelly_source reads "config" (fixed Kelly inputs)
    cdef long long a, b         # STALE_DECISION: age_ms, limit_ms; WARM_UP: bars, needed
    cdef bint invalid           # INTERNAL_INVALID_SIGNAL: the engine refused these numbers
    cdef int bad_side
    cdef double bad_qty, bad_conf, bad_cons
    cdef object regime          # L3's regime (PART_VOTE)
    cdef tuple members          # the vote's member names and timeframes (PART_VOTE)
    cdef tuple timeframes
    # PART_VOTE: the VoteResult's bytes before its timeframes, and each timeframe's vote:
    # all vote_dict reads (not the technical components: 512 bytes less a signal).
    cdef char vote_head[VOTE_HEAD_ROOM]
    cdef double tf_vote[VOTE_MAX_TIMEFRAMES]
    cdef SizingResult sizing    # PART_SIZING
    cdef RiskCheck risk         # PART_RISK
    cdef RiskBarUpdate position # PART_POSITION
    # PART_FINRL: the quantity FinRL's semantics request (sizing and the risk gate may only
    # lower it), and each FinRL member's action and shares (members in finrl_members).
    cdef double finrl_request
    cdef unsigned int finrl_members
    cdef double finrl_action[VOTE_MAX_MEMBERS]
    cdef double finrl_shares[VOTE_MAX_MEMBERS]
    cdef double turbulence      # PART_TURBULENCE: the index and risk.turbulence_threshold
    cdef double turbulence_threshold
