"""In-engine metrics: signal, vote and member counters and per-stage latency histograms.

The engine updates one :c:type:`EngineMetrics` struct from its per-bar path (_telemetry.pxd
states the calls, the bucket layout and the cost); :class:`MetricsRecorder` wraps one for
Python and the tests, with validated arguments. :func:`metrics_dict` (and
:meth:`MetricsRecorder.as_dict`) renders the struct as::

    {"bars": int,                                   # signals emitted
     "signals": {"buy": int, "sell": int, "hold": int},
     "codes": {code_name: count},                   # reasoning codes, nonzero only
     "votes": int,                                  # bars whose ensemble voted
     "confidence": {"mean": float | None, "sum": float, "buckets": [10 ints]},
     "consensus": {"mean": float | None, "sum": float},
     "members": {name: {"votes": int, "agree": int, "agreement": float | None,
                        "failures": int}},
     "latency": {stage: {"count": int, "sum_s": float, "max_s": float,
                         "buckets": [[upper_bound_s, cumulative_count], ...],  # +inf last
                         "p50_s": float | None, "p95_s": float | None, "p99_s": float | None}}}

with the stages of :data:`STAGE_NAMES`. Means are None before the first vote, agreements
before the member's first vote, quantiles while the stage has no observation.
"""

from libc.math cimport INFINITY, NAN, ceil, isnan
from libc.string cimport memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from l2fast.errors import InvalidInputError

from l2fast._checks cimport enum_names
from l2fast.decision._sizing cimport check_number

# The bit length of v (0 for 0): one instruction where the compiler has a count of leading
# zeros, a loop elsewhere.
cdef extern from *:
    """
    static inline int l2f_bit_length(unsigned long long v) {
    #if defined(__GNUC__) || defined(__clang__)
        return v ? 64 - __builtin_clzll(v) : 0;
    #else
        int n = 0;
        while (v) { ++n; v >>= 1; }
        return n;
    #endif
    }
    """
    int bit_length "l2f_bit_length"(unsigned long long v) noexcept nogil

#: Stage names, by the stage numbers of metrics_latency.
STAGE_NAMES = enum_names(globals()["LatencyStage"], "MET_STAGE_", True)
#: Most reasoning codes one recorder counts.
MAX_CODES = MET_MAX_CODES
#: Most ensemble members one recorder follows.
MAX_MEMBERS = VOTE_MAX_MEMBERS
#: Confidence buckets (width 0.1).
CONF_BUCKETS = MET_CONF_BUCKETS
#: The finite latency bucket bounds in nanoseconds (an overflow bucket follows the last).
LATENCY_BOUNDS_NS = tuple(metrics_lat_bound_ns(k) for k in range(MET_LAT_BUCKETS))

_MAX_NS = 2 ** 63


# ------------------------------------------------------------------------ kernels

cdef void metrics_init(EngineMetrics* m) noexcept nogil:
    memset(m, 0, sizeof(EngineMetrics))


cdef long long metrics_now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000LL + ts.tv_nsec


cdef int metrics_lat_bucket(long long ns) noexcept nogil:
    cdef unsigned long long v
    cdef int n, k
    if ns <= (1LL << MET_LAT_MIN_SHIFT):
        return 0
    # With v = ns - 1 in [2**(n-1), 2**n), its top three bits t (4 .. 7) put ns in
    # (t, t + 1] * 2**(n-3): the bucket whose bound is (t + 1) * 2**(n-3).
    v = <unsigned long long>(ns - 1)
    n = bit_length(v)
    k = 4 * (n - MET_LAT_MIN_SHIFT - 1) + <int>(v >> (n - 3)) - 3
    return k if k < MET_LAT_BUCKETS else MET_LAT_BUCKETS


cdef long long metrics_lat_bound_ns(int k) noexcept nogil:
    return <long long>(4 + k % 4) << (MET_LAT_MIN_SHIFT - 2 + k // 4)


cdef void metrics_latency(EngineMetrics* m, int stage, long long ns) noexcept nogil:
    cdef LatencyHist* h = &m.stages[stage]
    h.counts[metrics_lat_bucket(ns)] += 1
    h.count += 1
    h.sum_ns += ns
    if ns > h.max_ns:
        h.max_ns = ns


cdef void metrics_signal(EngineMetrics* m, int side, int code) noexcept nogil:
    m.bars += 1
    m.sides[side + 1] += 1
    m.codes[code] += 1


cdef void metrics_vote(EngineMetrics* m, double confidence, double consensus) noexcept nogil:
    cdef int b = <int>(confidence * MET_CONF_BUCKETS) if confidence > 0.0 else 0
    m.votes += 1
    m.conf_sum += confidence
    m.cons_sum += consensus
    m.conf_hist[b if b < MET_CONF_BUCKETS else MET_CONF_BUCKETS - 1] += 1


cdef void metrics_member(EngineMetrics* m, int k, bint failed, int member_side,
                         int direction) noexcept nogil:
    if failed:
        m.member_failures[k] += 1
        return
    m.member_votes[k] += 1
    if direction != 0 and member_side == direction:
        m.member_agree[k] += 1


cdef double hist_quantile(const LatencyHist* h, double q) noexcept nogil:
    cdef long long rank, seen = 0
    cdef int k
    if h.count == 0:
        return NAN
    rank = <long long>ceil(q * <double>h.count)
    if rank < 1:
        rank = 1
    for k in range(MET_LAT_BUCKETS):
        seen += h.counts[k]
        if seen >= rank:
            return <double>metrics_lat_bound_ns(k) / 1e9
    return <double>h.max_ns / 1e9


# ------------------------------------------------------------------------ rendering

cdef object _opt(double x):
    return None if isnan(x) else x


cdef dict _hist_dict(const LatencyHist* h):
    cdef list buckets = []
    cdef long long seen = 0
    cdef int k
    for k in range(MET_LAT_BUCKETS):
        seen += h.counts[k]
        buckets.append([<double>metrics_lat_bound_ns(k) / 1e9, seen])
    buckets.append([INFINITY, h.count])
    return {
        "count": h.count,
        "sum_s": <double>h.sum_ns / 1e9,
        "max_s": <double>h.max_ns / 1e9,
        "buckets": buckets,
        "p50_s": _opt(hist_quantile(h, 0.50)),
        "p95_s": _opt(hist_quantile(h, 0.95)),
        "p99_s": _opt(hist_quantile(h, 0.99)),
    }


cdef dict metrics_dict(const EngineMetrics* m, tuple code_names, tuple member_names):
    cdef int k
    cdef long long votes
    members = {}
    for k in range(len(member_names)):
        votes = m.member_votes[k]
        members[member_names[k]] = {
            "votes": votes,
            "agree": m.member_agree[k],
            "agreement": <double>m.member_agree[k] / votes if votes else None,
            "failures": m.member_failures[k],
        }
    return {
        "bars": m.bars,
        "signals": {"buy": m.sides[2], "sell": m.sides[0], "hold": m.sides[1]},
        "codes": {code_names[k]: m.codes[k] for k in range(MET_MAX_CODES) if m.codes[k]},
        "votes": m.votes,
        "confidence": {"mean": m.conf_sum / m.votes if m.votes else None, "sum": m.conf_sum,
                       "buckets": [m.conf_hist[k] for k in range(MET_CONF_BUCKETS)]},
        "consensus": {"mean": m.cons_sum / m.votes if m.votes else None, "sum": m.cons_sum},
        "members": members,
        "latency": {STAGE_NAMES[k]: _hist_dict(&m.stages[k]) for k in range(MET_STAGES)},
    }


# ------------------------------------------------------------- Python interface

def now_ns() -> int:
    """The metrics clock: CLOCK_MONOTONIC in nanoseconds (as :func:`time.monotonic_ns`)."""
    return metrics_now_ns()


def latency_bucket(long long ns) -> int:
    """The bucket index of a latency of ``ns`` nanoseconds (``len(LATENCY_BOUNDS_NS)``:
    the overflow bucket)."""
    return metrics_lat_bucket(ns)


cdef tuple _names(object names, str what, int limit):
    try:
        result = tuple(names)
    except TypeError:
        raise InvalidInputError(f"{what}={names!r}: must be a sequence of names") from None
    if len(result) > limit:
        raise InvalidInputError(f"{what}: {len(result)} names, at most {limit}")
    for name in result:
        if type(name) is not str or not name:
            raise InvalidInputError(f"{what}: {name!r} is not a non-empty string")
    if len(set(result)) != len(result):
        raise InvalidInputError(f"{what}={list(result)!r}: names must be distinct")
    return result


cdef int _index(object value, str what, Py_ssize_t lo, Py_ssize_t hi) except? -1:
    # An int in [lo, hi) (bools refused: a True stage or side is a caller bug).
    if type(value) is not int or not lo <= value < hi:
        raise InvalidInputError(f"{what}={value!r}: must be an integer in [{lo}, {hi})")
    return value


cdef class MetricsRecorder:
    """The engine's metrics for Python: the kernels of this module behind validated methods.

    Args:
        code_names: Names of the reasoning codes, numbered by position (at most
            :data:`MAX_CODES`, distinct).
        member_names: Names of the ensemble members, numbered by position (at most
            :data:`MAX_MEMBERS`, distinct).

    Raises:
        InvalidInputError: A name list is too long, repeats a name or holds a non-string.
    """

    cdef EngineMetrics _m
    cdef readonly tuple code_names
    cdef readonly tuple member_names

    def __cinit__(self, code_names, member_names):
        self.code_names = _names(code_names, "code_names", MET_MAX_CODES)
        self.member_names = _names(member_names, "member_names", VOTE_MAX_MEMBERS)
        metrics_init(&self._m)

    def latency(self, stage, ns) -> None:
        """Record that ``stage`` (an index of :data:`STAGE_NAMES`) took ``ns`` >= 0 nanoseconds."""
        cdef int s = _index(stage, "stage", 0, MET_STAGES)
        if type(ns) is not int or not 0 <= ns < _MAX_NS:
            raise InvalidInputError(f"ns={ns!r}: must be an integer in [0, 2**63)")
        metrics_latency(&self._m, s, ns)

    def signal(self, side, code) -> None:
        """Record an emitted signal: ``side`` -1 (sell), 0 (hold) or +1 (buy), ``code`` an
        index of ``code_names``."""
        cdef int s = _index(side, "side", -1, 2)
        metrics_signal(&self._m, s, _index(code, "code", 0, len(self.code_names)))

    def vote(self, confidence, consensus) -> None:
        """Record a bar whose ensemble voted, with its confidence and consensus in [0, 1]."""
        cdef double c = check_number(confidence, "confidence", 0.0, 1.0)
        metrics_vote(&self._m, c, check_number(consensus, "consensus", 0.0, 1.0))

    def member(self, k, bint failed, member_side, direction) -> None:
        """Record member ``k``'s part in a vote: failed, or its side (-1, 0, +1) against the
        ensemble's direction (-1, 0, +1)."""
        cdef int i = _index(k, "k", 0, len(self.member_names))
        cdef int s = _index(member_side, "member_side", -1, 2)
        metrics_member(&self._m, i, failed, s, _index(direction, "direction", -1, 2))

    def quantile(self, stage, double q) -> float:
        """The ``q``-quantile of ``stage``'s latency in seconds (bucket upper bound), NaN if empty."""
        cdef int s = _index(stage, "stage", 0, MET_STAGES)
        return hist_quantile(&self._m.stages[s], check_number(q, "q", 0.0, 1.0))

    def as_dict(self) -> dict:
        """The metrics as a dict (layout in the module docstring)."""
        return metrics_dict(&self._m, self.code_names, self.member_names)

    def reset(self) -> None:
        """Zero every counter and histogram."""
        metrics_init(&self._m)
