# Contract of the in-engine metrics: counters and fixed-bucket latency histograms kept in
# one plain struct, updated from the engine's per-bar path at the cost of a few integer
# increments (no allocation, no branch on bucket bounds, no lock: one engine, one thread).
#
# Per bar the engine does:
#     t0 = metrics_now_ns()
#     <technical step>;              t1 = metrics_now_ns(); metrics_latency(&m, MET_STAGE_TECHNICAL, t1 - t0)
#     <ensemble run>                 (only on bars that run it: MET_STAGE_INFERENCE)
#     <vote>                         (MET_STAGE_VOTE), then, when the ensemble voted:
#         metrics_vote(&m, result.confidence, result.consensus)
#         metrics_member(&m, k, failed_k, result.members[k].side, result.direction)  for each member k
#     <sizing + risk + signal>       (MET_STAGE_DECIDE)
#     metrics_signal(&m, side, code); metrics_latency(&m, MET_STAGE_TOTAL, now - t0)
# and, when asked (GIL held), metrics_dict(&m, code_names, member_names).
#
# Latency buckets: MET_LAT_BUCKETS finite upper bounds, log-spaced with four per octave
# (the bounds 4, 5, 6, 7 times a power of two: 256, 320, 384, 448, 512, 640 ... ns), from
# 2**8 = 256 ns to 2**30 ns = 1.073741824 s, plus one overflow slot above the last bound:
#     bound(k) = (4 + k % 4) * 2 ** (6 + k // 4) ns,  k = 0 .. MET_LAT_BUCKETS - 1
# A latency of ns nanoseconds is counted in the first bucket with ns <= bound(k) (the
# Prometheus ``le`` rule), found from the bit length of ns - 1 and the two bits below its
# leading one, in O(1). A quantile read from the buckets is within 25% of the true value.
#
# Confidence buckets: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0] (1.0 counts in the last one),
# so that the buckets from a threshold up hold the confidences passing the gate
# ``confidence >= confidence_threshold``.
#
# Every function trusts its arguments (the caller numbers stages, codes, members and sides
# within the bounds below; MetricsRecorder validates them for Python); none fails.

from l2fast.decision._voting cimport VOTE_MAX_MEMBERS

# The caller's stage numbering (metrics_latency's ``stage``), the one declaration of the
# stages: telemetry.pyx derives STAGE_NAMES (the names without MET_STAGE_, lower-cased).
cpdef enum LatencyStage:
    MET_STAGE_TECHNICAL = 0     # bar validation and the technical state step
    MET_STAGE_INFERENCE = 1     # the ONNX ensemble run
    MET_STAGE_VOTE = 2          # member and technical votes, fusion, gates
    MET_STAGE_DECIDE = 3        # sizing, risk gate and the signal
    MET_STAGE_TOTAL = 4         # the whole bar

cdef enum:
    MET_MAX_CODES = 64          # reasoning codes, numbered 0 .. MET_MAX_CODES - 1 by the caller
    MET_CONF_BUCKETS = 10       # confidence buckets of width 0.1
    MET_LAT_BUCKETS = 89        # finite latency bounds: 4 per octave over 2**8 .. 2**30 ns
    MET_LAT_MIN_SHIFT = 8       # the first bound is 2**MET_LAT_MIN_SHIFT ns
    MET_STAGES = MET_STAGE_TOTAL + 1

cdef struct LatencyHist:
    long long counts[MET_LAT_BUCKETS + 1]   # per bucket (not cumulative); the last: > 2**30 ns
    long long count             # observations
    long long sum_ns            # their sum (exact: integers)
    long long max_ns            # the largest one (0 when empty)

cdef struct EngineMetrics:
    long long bars              # signals emitted (one per bar)
    long long sides[3]          # signals by side + 1: [0] sell, [1] hold, [2] buy
    long long codes[MET_MAX_CODES]          # signals by reasoning code
    long long votes             # bars whose ensemble voted
    double conf_sum             # sum of their confidences ...
    double cons_sum             # ... and consensus (summed in bar order)
    long long conf_hist[MET_CONF_BUCKETS]   # their confidences by bucket
    long long member_votes[VOTE_MAX_MEMBERS]     # votes each member took part in (not failed)
    long long member_agree[VOTE_MAX_MEMBERS]     # ... with its side equal to the ensemble's direction
    long long member_failures[VOTE_MAX_MEMBERS]  # votes each member was left out of (failed)
    LatencyHist stages[MET_STAGES]

# Zero every counter and histogram.
cdef void metrics_init(EngineMetrics* m) noexcept nogil
# CLOCK_MONOTONIC in nanoseconds (clock_gettime through the vDSO: about 20 ns), the clock
# of Python's time.monotonic_ns().
cdef long long metrics_now_ns() noexcept nogil
# The bucket of a latency of ``ns`` nanoseconds: 0 .. MET_LAT_BUCKETS (the overflow slot);
# ns <= 256 (0 and negative included) is bucket 0.
cdef int metrics_lat_bucket(long long ns) noexcept nogil
# bound(k) in nanoseconds, for k in 0 .. MET_LAT_BUCKETS - 1.
cdef long long metrics_lat_bound_ns(int k) noexcept nogil
# One observation of ``stage`` (0 .. MET_STAGES - 1) lasting ``ns`` >= 0 nanoseconds; O(1).
cdef void metrics_latency(EngineMetrics* m, int stage, long long ns) noexcept nogil
# One emitted signal: side -1 / 0 / +1, code 0 .. MET_MAX_CODES - 1; counts the bar too.
cdef void metrics_signal(EngineMetrics* m, int side, int code) noexcept nogil
# A bar whose ensemble voted, with the vote's confidence and consensus (both in [0, 1]).
cdef void metrics_vote(EngineMetrics* m, double confidence, double consensus) noexcept nogil
# Member k (0 .. VOTE_MAX_MEMBERS - 1) in that vote: a failure if ``failed``, else a vote,
# in agreement when member_side == direction != 0.
cdef void metrics_member(EngineMetrics* m, int k, bint failed, int member_side,
                         int direction) noexcept nogil
# The q-quantile (q in [0, 1]) of a histogram in seconds: the upper bound of the bucket
# holding the observation of rank max(1, ceil(q * count)) (as Prometheus reports a
# bucketed quantile, without its interpolation); for the overflow slot, the largest
# observation. NaN when the histogram is empty.
cdef double hist_quantile(const LatencyHist* h, double q) noexcept nogil
# The metrics as a JSON-ready dict (tests/reference/telemetry.py documents its layout;
# ``latency`` bounds are floats with +inf last): code_names[i] names code i (only codes
# with a nonzero count appear, so code_names needs entries up to the largest code used),
# member_names the first len(member_names) members. GIL held; raises IndexError when a
# counted code has no name.
cdef dict metrics_dict(const EngineMetrics* m, tuple code_names, tuple member_names)
