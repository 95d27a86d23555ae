# Contract of the voting kernels: the ensemble members' votes, the technical votes of every
# timeframe, their fusion into one side, and the consensus/confidence/alignment gates.
# The formulas are in the module docstring of _voting.pyx (quoted by l2fast/decision/voting.py).
#
# Same conventions as _averages.pxd: plain C structs, nothing allocated (every buffer is a
# fixed array inside the struct, so a struct copy is a snapshot), ``noexcept nogil`` steps
# that never fail (inputs are checked at the Python boundary; non-finite numbers are
# treated as "unavailable", never propagated).
#
# Per-bar call order for the engine (one Voter per symbol):
#   1. updated = <technical state step>            (bit i set: timeframe i's bar closed)
#   2. voter_technical(&v, updated, features)      (advances the technical votes of those
#                                                   timeframes; the others keep theirs)
#   3. run the ensemble, fill inputs[0 .. n_members - 1] (MemberInput)
#   4. voter_vote(&v, inputs, multipliers, &result) (multipliers: the regime's, one per member)
# Steps 2 and 4 are independent: step 4 reads the latest technical votes held in ``v``.

from l2fast.technical._candles cimport N_CANDLE_PATTERNS

cdef enum:
    VOTE_MAX_MEMBERS = 8
    VOTE_MAX_ACTIONS = 32       # discrete actions per member
    VOTE_MAX_TIMEFRAMES = 8     # = features.MAX_TIMEFRAMES
    VOTE_RING = 128             # deque capacity (a power of two): windows of <= 127 bars

# The named cpdef enums below are the one declaration of their codes: _voting.pyx derives
# the Python names from the constants (MEMBER_KINDS, MEMBER_STATUSES: the names without the
# prefix, lower-cased; GATE_CODES: the nonzero gate bits, names without GATE_).
cpdef enum MemberKindCode:  # MemberSpec.kind
    MEMBER_PROBS = 0            # discrete action + "probs" (PPO, A2C)
    MEMBER_Q_VALUES = 1         # discrete action + "q_values" (DQN)
    MEMBER_CONTINUOUS = 2       # Box action; its first dimension is the target position

cpdef enum MemberStatus:  # MemberVote.status: OK or why the member was left out of this bar's vote
    MEMBER_OK = 0
    MEMBER_RUN_FAILED = 1       # the caller flagged the run as failed
    MEMBER_NON_FINITE = 2       # NaN/inf in the scores (discrete) or in the action (continuous)
    MEMBER_BAD_ACTION = 3       # discrete action index outside [0, n_actions)

cdef enum:  # VoteParams.voting
    VOTING_WEIGHTED = 0         # model score = weighted mean of the members' target positions
    VOTING_MAJORITY = 1         # model score = weighted buy share - weighted sell share

# Technical components: TFVote.components[...] and TechParams.weights[...]. They index
# arrays, so the enum is anonymous (Cython refuses a named one as an index); COMPONENTS in
# _voting.pyx names them, tests/test_codes.py checks it against these constants.
cpdef enum:
    TC_RSI_LEVEL = 0
    TC_RSI_DIVERGENCE = 1
    TC_MACD_CROSS = 2
    TC_MACD_HISTOGRAM = 3
    TC_BB_PCTB = 4
    TC_BB_SQUEEZE = 5
    TC_PATTERNS = 6
    TC_SR_BREAKOUT = 7

cdef enum:
    N_TECH_COMPONENTS = TC_SR_BREAKOUT + 1

cpdef enum VoteGate:  # VoteResult.gate (first failing gate) and VoteResult.gates (bit mask of all)
    GATE_PASS = 0
    GATE_NO_MODEL_VOTE = 1      # no live member with a positive weight
    GATE_NO_DIRECTION = 2       # |fused score| <= dead_band
    GATE_LOW_CONSENSUS = 4      # consensus < consensus_threshold
    GATE_LOW_CONFIDENCE = 8     # confidence < confidence_threshold
    GATE_LOW_ALIGNMENT = 16     # alignment < alignment_threshold

# ------------------------------------------------------------------ parameters

cdef struct MemberSpec:
    int kind                    # MEMBER_PROBS / MEMBER_Q_VALUES / MEMBER_CONTINUOUS
    int n_actions               # discrete: number of actions (scores read); continuous: unused
    double weight               # config weight, >= 0
    double temperature          # softmax temperature of q_values, > 0
    double targets[VOTE_MAX_ACTIONS]   # discrete: target position of each action, in [-1, 1]

cdef struct VoteParams:
    int n_members
    MemberSpec members[VOTE_MAX_MEMBERS]
    int voting                  # VOTING_WEIGHTED / VOTING_MAJORITY
    double dead_band            # |x| <= dead_band counts as side 0 (members, timeframes, fused)
    double technical_weight     # lambda: share of the technical score in the fused score
    double consensus_threshold
    double confidence_threshold
    double alignment_threshold
    double conf_model           # confidence weights (model, technical, alignment) ...
    double conf_technical
    double conf_alignment
    double conf_total           # ... and their sum (> 0)
    int n_timeframes
    double tf_weights[VOTE_MAX_TIMEFRAMES]   # >= 0

cdef struct TechParams:
    double weights[N_TECH_COMPONENTS]        # component weights, >= 0
    double pattern_weights[N_CANDLE_PATTERNS]  # per candlestick pattern (0 = ignored)
    double pattern_scale        # summed pattern signal (in units of 100) giving a full vote
    double rsi_oversold
    double rsi_overbought
    double pctb_low             # %b below: buy vote
    double pctb_high            # %b above: sell vote
    double squeeze_tolerance    # squeeze: width <= (1 + tol) * min width of the window
    long long div_window        # bars before the current one searched for the prior low/high
    long long div_min_gap       # bars between that prior extreme and the current bar
    long long squeeze_window    # bars in the width minimum (current bar included)
    long long squeeze_memory    # a breakout counts up to this many bars after a squeeze
    Py_ssize_t rsi_slot         # offset of the RSI used (S_RSI + rsi_index)
    Py_ssize_t pattern_slot     # offset of the first candlestick pattern (S_RSI + n_rsi)

# ------------------------------------------------------------------ technical state

cdef struct MonoDeque:
    # Monotonic deque of (bar, key, aux) over a sliding window: the front is the window's
    # minimum (sign +1) or maximum (sign -1) of ``key``, the most recent one on ties.
    long long bar[VOTE_RING]
    double key[VOTE_RING]
    double aux[VOTE_RING]
    int head                    # slot of the front
    int count

cdef struct TFVote:
    double components[N_TECH_COMPONENTS]     # each in [-1, 1], NaN when unavailable
    double vote                 # weighted mean of the available components, NaN if none

cdef struct TechState:
    # One timeframe: stepped once per closed bar of that timeframe.
    MonoDeque lows              # closes (key) and RSIs (aux): the prior low ...
    MonoDeque highs             # ... and the prior high of the divergence window
    MonoDeque widths            # Bollinger widths: the squeeze window's minimum
    double prev_hist            # MACD histogram of the previous bar (NaN: none)
    long long last_squeeze      # bar of the latest squeeze, -1 if none yet
    long long bars              # bars consumed
    TFVote vote                 # the latest vote, kept until the next bar of the timeframe

# ------------------------------------------------------------------ per-bar input and output

cdef struct MemberInput:
    bint failed                 # the run failed (the member is left out)
    long long action            # discrete: the chosen action index (ONNX "action")
    double value                # continuous: the first action dimension
    double scores[VOTE_MAX_ACTIONS]   # discrete: probs or q_values (n_actions of them)

cdef struct MemberVote:
    int status                  # MEMBER_OK or the failure reason (then every number is 0)
    int side                    # +1 / 0 / -1 of the target with the dead band
    double target               # target position in [-1, 1]
    double confidence           # in [0, 1]
    double weight               # weight * multiplier normalised over the live members

cdef struct VoteResult:
    int side                    # +1 buy / -1 sell / 0 hold, after the gates
    int direction               # the fused side before the gates
    int gate                    # GATE_PASS or the first failing gate (in enum order)
    int gates                   # bit mask of every failing gate
    int n_live                  # members that voted
    int n_timeframes_live       # timeframes with a technical vote
    double target               # mean target of the members agreeing with direction (0 if none)
    double score                # fused score (1 - lambda) * model_score + lambda * technical_score
    double model_score          # in [-1, 1]
    double technical_score      # weighted mean of the timeframes' votes, 0 if none, in [-1, 1]
    double model_confidence     # M: mean confidence of the agreeing members, in [0, 1]
    double technical_agreement  # T = (1 + direction * technical_score) / 2
    double consensus            # C: weight of the members agreeing with direction, in [0, 1]
    double alignment            # A: weighted share of timeframes agreeing with direction
    double confidence           # (w_m M + w_t T + w_a A) / (w_m + w_t + w_a), in [0, 1]
    MemberVote members[VOTE_MAX_MEMBERS]
    TFVote timeframes[VOTE_MAX_TIMEFRAMES]

cdef struct Voter:
    VoteParams p
    TechParams tp
    Py_ssize_t block_size       # features per timeframe block (timeframe i at i * block_size)
    TechState tf[VOTE_MAX_TIMEFRAMES]
    long long failures[VOTE_MAX_MEMBERS]     # bars each member was left out
    int last_failure[VOTE_MAX_MEMBERS]       # its latest failure reason (MEMBER_OK: never)
    long long votes             # voter_vote calls

# ------------------------------------------------------------------ functions

# Fill ``v`` from a validated l2fast.decision.voting.VotingParams and reset it (init time, GIL held).
cdef int voter_setup(Voter* v, object params) except -1
# Back to the state right after voter_setup: technical memory, counters (parameters kept).
cdef void voter_reset(Voter* v) noexcept nogil
cdef void tech_reset(TechState* s) noexcept nogil
# One closed bar of a timeframe: ``block`` is that timeframe's block of the feature vector
# (_features.pxd slot layout); writes s.vote.
cdef void tech_step(TechState* s, const TechParams* p, const double* block) noexcept nogil
# tech_step on every timeframe i whose bit is set in ``updated``; ``features`` is the whole
# feature vector of the technical state.
cdef void voter_technical(Voter* v, int updated, const double* features) noexcept nogil
# A member's target and confidence from its outputs; returns MEMBER_OK or the failure reason.
cdef int member_eval(const MemberSpec* m, const MemberInput* x,
                     double* target, double* confidence) noexcept nogil
# The bar's vote: members (inputs[i], multipliers[i] for i < n_members), the latest technical
# votes, fusion and gates. Counts failures in v.failures / v.last_failure.
cdef void voter_vote(Voter* v, const MemberInput* inputs, const double* multipliers,
                     VoteResult* out) noexcept nogil
# The one dict form of a vote (a signal's reasoning["vote"], VoterCore.vote): "direction"
# ("buy"/"sell"/"hold"), the scores and shares (None where not finite), "gates" (the failing
# gates' codes in gate order), "members" {name: {"status", "side", "target", "confidence",
# "weight"}} and "timeframes" {timeframe: vote or None}; ``members`` and ``timeframes`` name
# r's entries in order.
cdef dict vote_dict(const VoteResult* r, tuple members, tuple timeframes)
