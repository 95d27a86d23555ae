# Contract of the engine-state codec: the compiled state of an engine as bytes and back.
#
# Every kernel state is a plain C struct; some hold heap buffers (rolling windows). A
# snapshot is the raw bytes of each struct followed by the contents of its buffers, in a
# fixed walk. It is only ever loaded into a state built from the same configuration and
# the same compiled layout (the snapshot's header says which: LAYOUT_HASH), so buffer
# sizes match; loading reads each struct into a temporary, checks its sizes against the
# live struct, points the temporary's buffers at the live ones ("relink"), copies it in,
# then fills the buffers. A struct whose sizes differ is refused (SnapshotError) before
# the live struct is touched, so a live state never holds a foreign pointer.
# Each kernel family's buffers are listed once, in one walk per kernel (_snapshot.pyx):
# run on (temporary, live) it relinks and compares sizes, on (live, live) it saves or
# loads the contents, so the two can never list different buffers or orders.
#
# The bytes are not trusted (a checksum anyone can recompute guards them): the same walk
# states the family's invariants on the temporary (parameters equal the live ones, ring
# positions inside their rings, counts reachable, enum fields in their enums), and the
# structs without buffers (risk state, voters, aggregators, symbol slots) go through a
# temporary and their own check too (StateCodec.struct_). A state that breaks one is
# refused before the live struct is touched, so every kernel step stays memory-safe.

from l2fast.technical._features cimport TechnicalState
from l2fast.decision._risk cimport RiskState
from l2fast.decision._sizing cimport LiveStats
from l2fast.decision._voting cimport Voter
from l2fast.technical._statistics cimport CorrelState
from l2fast.technical._turbulence cimport TurbState

# A family's invariants on a loaded temporary ``s`` against the ``live`` struct, stated
# through StateCodec.expect (_snapshot.pyx).
ctypedef int (*check_fn)(StateCodec c, void* s, const void* live) except -1


cdef class StateCodec:
    # Writes (``loading`` False) or reads (True) one snapshot's state bytes, in order.
    cdef readonly bint loading
    cdef bytearray _out
    cdef bytes _data
    cdef const unsigned char* _ptr
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _size

    # Saving: append ``n`` bytes at ``p``; loading: overwrite them with the next ``n``.
    cdef int raw(self, void* p, size_t n) except -1
    # A count that must be equal on both sides (symbols, timeframes): saved, or read and
    # compared (SnapshotError naming ``what`` when it differs).
    cdef int same(self, long long value, str what) except -1
    # A string that must be equal on both sides (a slot's symbol): saved, or read and
    # compared (SnapshotError naming ``what``).
    cdef int name(self, str value, str what) except -1
    # Inside a composite struct's walk (_snapshot.pyx), one buffer field ``*p`` of ``n``
    # bytes, ``live`` and ``live_n`` the live struct's: while ``relinking``, point it at
    # ``live`` and note whether the sizes agree; otherwise save or load its ``n`` bytes.
    cdef bint relinking
    cdef bint _fits
    cdef str _why
    cdef int buffer(self, void** p, void* live, size_t n, size_t live_n) except -1
    # While relinking, note an invariant of the loaded temporary (``ok`` False: it breaks,
    # ``what`` says which; the first broken one is reported).
    cdef int expect(self, bint ok, str what) except -1
    # A struct without buffers of ``n`` bytes at ``live``: saved, or read into a temporary,
    # checked by ``check`` (its family's invariants) and only then copied in.
    cdef int struct_(self, void* live, size_t n, check_fn check, str what) except -1


cdef int technical_codec(StateCodec c, TechnicalState st) except -1
cdef int correl_codec(StateCodec c, CorrelState* s) except -1
cdef int turbulence_codec(StateCodec c, TurbState* s) except -1
cdef int livestats_codec(StateCodec c, LiveStats* s) except -1
cdef int risk_codec(StateCodec c, RiskState* s) except -1
cdef int voter_codec(StateCodec c, Voter* s) except -1
