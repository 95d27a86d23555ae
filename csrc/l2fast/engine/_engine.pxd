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
#      warm-up, the fused ONNX ensemble through io_binding, voter_vote, then for a
#      passing vote: an exit (opposite position) or sizing_compute + risk_check for an
#      entry, risk_accept when allowed; the TacticalSignal and its reasoning.

from l2fast.decision._risk cimport RiskBarUpdate

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
