# cython: language_level=3
"""The worker clock's pass in one native call: which calls owe a frame, and their frames out.

:class:`ClockPass` keeps :class:`engine.pacer.Pacer`'s arithmetic (absolute sub-tick deadlines,
phase buckets, bounded catch-up; its docstring states the invariants) over :class:`Outlet`
records, and :meth:`ClockPass.run` does what a Python member's ``tick`` did for every due call:
pop its playout buffer and write the AudioSocket message. When the caller's transport has
nothing buffered, the message goes straight to the socket with one non-blocking ``send``; what
the socket does not take (and every message while the transport holds bytes) goes through
``transport.write``, so the bytes stay in order and the transport's buffer limit,
``pause_writing`` and the stalled-caller rule work as before. Python hears only of outlets that
asked to be watched (a goodbye playing out) once they have played out, and of failed writes.

An outlet given the call's parser (:meth:`Outlet.read_with`) is also read by the pass, every
``read_every`` visits: whatever has arrived, with non-blocking ``recv`` calls, into the parser,
whose sink (the uplink) turns the audio into finished upstream frames; those go to the
outlet's ``upstream_send``. Python hears of the outlet only when the parser has events (a DTMF
digit, a hangup, a violation), the peer closed or the read failed (``status`` says which). A
read that returns less than a full buffer has taken all there was and stops, so an end of
stream that came with data is met by the next read (``2 * read_every`` ticks at most).
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from libc.string cimport memcpy
from libc.errno cimport errno, EAGAIN, EINTR

from engine._native.audiosocket cimport Parser
from engine._native.playout cimport PlayoutBuffer, PLAYING

__all__ = ["LATENESS_BIN_MS", "READ_EOF", "READ_EVENTS", "READ_FAILED", "ClockPass", "Outlet"]


cdef extern from "<sys/socket.h>" nogil:
    Py_ssize_t send(int fd, const void *buf, size_t n, int flags)
    Py_ssize_t recv(int fd, void *buf, size_t n, int flags)
    enum:
        MSG_DONTWAIT
        MSG_NOSIGNAL

# What a read found, as bits of Outlet.status.
cpdef enum:
    READ_EVENTS = 1     # the parser has events for Python
    READ_EOF = 2        # the peer closed its side
    READ_FAILED = 4     # recv failed (read_errno says why)

# One pass reads at most _READ_CHUNKS full buffers from a caller: a peer sending faster than
# real time is left in its socket (and TCP's window) rather than taken all at once.
cdef enum:
    _READ_SIZE = 65536
    _READ_CHUNKS = 4

cdef unsigned char _read_buffer[_READ_SIZE]


LATENESS_BIN_MS = 0.5
cdef double _BIN_MS = 0.5
cdef int _LATENESS_BINS = 200
cdef double _EPSILON = 1e-9
# Far enough inside long long that the index plus a tick's sub-ticks never overflows.
cdef double _MAX_SUBTICK = 4611686018427387904.0  # 2**62


@cython.final
cdef class Outlet:
    """One call's place on the clock: its playout buffer and where its frames go.

    Args:
        owner: told of what needs Python (``clock_attention()``), never per frame.
        playout: the call's playout buffer (made with its AudioSocket kind).
        transport: the caller's transport.
        fd: the caller socket's descriptor for direct sends, or -1 for ``transport.write``
            alone.

    ``tap``, when set to a bytearray, gets the audio of every frame written, as played (the
    call's recording); the adapter swaps in a fresh one when it takes what it holds.
    """

    cdef readonly object owner
    cdef readonly PlayoutBuffer playout
    cdef readonly object transport
    cdef readonly int fd
    cdef public bint watch
    cdef readonly Py_ssize_t frames, direct
    cdef readonly object error
    cdef public object upstream_send
    cdef public bytearray tap
    cdef readonly int status, read_errno
    cdef readonly Py_ssize_t reads
    cdef object _write, _size
    cdef Parser _parser
    cdef list _up
    cdef int _bucket, _visits

    def __init__(self, owner, PlayoutBuffer playout not None, transport, int fd=-1):
        self.owner = owner
        self.playout = playout
        self.transport = transport
        self.fd = fd
        self._write = transport.write
        self._size = transport.get_write_buffer_size
        self.watch = False
        self.frames = self.direct = 0
        self.error = None
        self._bucket = -1
        self._visits = 0
        self.upstream_send = None
        self.tap = None
        self._parser = None
        self._up = None
        self.status = self.read_errno = 0
        self.reads = 0

    def read_with(self, Parser parser, list upstream_frames):
        """From now on the pass reads the caller into ``parser`` (the transport's own reading
        is paused by the adapter); frames the parser's sink leaves in ``upstream_frames`` go
        to ``upstream_send`` (a callable taking that list) when it is set. None stops it."""
        if parser is not None and self.fd < 0:
            raise ValueError("an outlet without a socket cannot read")
        self._parser = parser
        self._up = upstream_frames

    @property
    def reading(self):
        """The pass reads this outlet's caller."""
        return self._parser is not None

    def take_status(self):
        """What the reads found since the last call (READ_* bits); cleared."""
        cdef int status = self.status
        self.status = 0
        return status

    cdef int _read(self) except -1:
        """Reads what has arrived; sends finished upstream frames; sets status bits."""
        cdef Py_ssize_t got
        cdef int chunk
        cdef Parser parser = self._parser
        for chunk in range(_READ_CHUNKS):
            got = recv(self.fd, _read_buffer, _READ_SIZE, MSG_DONTWAIT)
            if got > 0:
                self.reads += 1
                parser.feed(_read_buffer, got)
                if got < _READ_SIZE or parser.finished:
                    break
            elif got == 0:
                self.status |= READ_EOF
                break
            else:
                if errno != EAGAIN and errno != EINTR:  # EWOULDBLOCK is EAGAIN on Linux
                    self.read_errno = errno
                    self.status |= READ_FAILED
                break
        if parser._events:
            self.status |= READ_EVENTS
        up = self._up
        if up:
            if self.upstream_send is None:
                self.status |= READ_EVENTS
            else:
                self.upstream_send(up)
                del up[:]
        return 0

    cdef int _tap(self, bytes message, Py_ssize_t size, int frames) except -1:
        """Appends the payloads of ``message``'s ``frames`` messages (headers left out)."""
        cdef Py_ssize_t each = size // frames
        cdef Py_ssize_t payload = each - 3
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self.tap)
        cdef const char *src = PyBytes_AS_STRING(message)
        cdef char *dst
        cdef int k
        PyByteArray_Resize(self.tap, old + frames * payload)
        dst = PyByteArray_AS_STRING(self.tap) + old
        for k in range(frames):
            memcpy(dst + k * payload, src + k * each + 3, payload)
        return 0

    @property
    def played_out(self):
        """Nothing of the model's is left to play."""
        return self.playout._state != PLAYING and self.playout._count == 0

    cdef int _emit(self, int frames) except -1:
        """Pops and writes ``frames`` messages (more than one only when catching up)."""
        cdef bytes message = self.playout._pop(True)
        cdef Py_ssize_t size, sent
        cdef int k
        if frames > 1:
            parts = [message]
            for k in range(frames - 1):
                parts.append(self.playout._pop(True))
            message = b"".join(parts)
        self.frames += frames
        size = PyBytes_GET_SIZE(message)
        if self.tap is not None:
            self._tap(message, size, frames)
        if self.fd >= 0 and self._size() == 0:
            sent = send(self.fd, PyBytes_AS_STRING(message), size, MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent == size:
                self.direct += 1
                return 0
            if sent > 0:
                self._write(message[sent:])
                return 0
            # EAGAIN, or an error the transport will find and report on its own write.
        self._write(message)
        return 0


cdef class ClockPass:
    """Phase buckets of outlets on an absolute sub-tick grid, and the pass over the due ones.

    Args:
        t0: time of sub-tick 0 (the clock's start), on the clock ``now`` is read from.
        tick: the frame period in seconds.
        subticks: phases per tick.
        max_catchup: the most frames an outlet is owed after a late wake-up.
        read_every: reading outlets are read on every ``read_every``-th visit (each visit is
            a tick of theirs).
    """

    cdef readonly double t0, tick, interval, max_lateness
    cdef readonly int subticks, max_catchup, read_every
    cdef readonly long long ticks, late_wakeups, catchup_frames, resyncs, rephases
    cdef readonly list lateness_bins
    cdef list _buckets
    cdef Py_ssize_t _count
    cdef long long _next

    def __init__(self, double t0, double tick=0.020, int subticks=5, int max_catchup=3,
                 int read_every=2):
        if tick <= 0 or subticks < 1 or max_catchup < 1 or read_every < 1:
            raise ValueError(
                "tick must be positive, subticks, max_catchup and read_every at least 1")
        self.read_every = read_every
        self.t0 = t0
        self.tick = tick
        self.subticks = subticks
        self.interval = tick / subticks
        self.max_catchup = max_catchup
        self._buckets = [{} for _ in range(subticks)]
        self._count = 0
        self._next = 0
        self.ticks = self.late_wakeups = self.catchup_frames = 0
        self.resyncs = self.rephases = 0
        self.max_lateness = 0.0
        self.lateness_bins = [0] * _LATENESS_BINS

    def __len__(self):
        return self._count

    def __contains__(self, Outlet outlet):
        return outlet._bucket >= 0

    def next_deadline(self):
        """Absolute time of the next sub-tick to process."""
        return self.t0 + self._next * self.interval

    def add(self, Outlet outlet not None, double now):
        """Puts a new outlet in the bucket due soonest after ``now``.

        Raises:
            ValueError, OverflowError: as :meth:`run`, when ``now`` is read (an empty clock).
        """
        if outlet._bucket >= 0:
            return
        cdef long long k
        if self._count == 0:
            k = _subtick((now - self.t0) / self.interval + _EPSILON) + 1
            if k > self._next:
                self._next = k
        outlet._bucket = self._next % self.subticks
        (<dict>self._buckets[outlet._bucket])[outlet] = None
        self._count += 1

    def remove(self, Outlet outlet not None):
        """Takes an outlet off the clock; one not on it is ignored."""
        if outlet._bucket < 0:
            return
        del (<dict>self._buckets[outlet._bucket])[outlet]
        outlet._bucket = -1
        self._count -= 1

    def rephase(self, Outlet outlet not None, double now):
        """Moves ``outlet`` to the phase nearest ``now`` (see ``Pacer.rephase``); when its frame
        is due at once, writes it now. Returns True then."""
        cdef int old = outlet._bucket
        if old < 0:
            return False
        cdef long long last = self._next - 1
        cdef bint due_now = last >= 0 and (
            now - (self.t0 + last * self.interval) <= self.interval / 2)
        cdef int target = (last if due_now else self._next) % self.subticks
        if target != old:
            del (<dict>self._buckets[old])[outlet]
            (<dict>self._buckets[target])[outlet] = None
            outlet._bucket = target
            self.rephases += 1
        if due_now:
            outlet._emit(1)
        return due_now

    def run(self, double now):
        """Processes every sub-tick due by ``now``: each due outlet's frames are written.

        Returns the outlets Python must look at: watched ones that have played out, and any
        whose write raised (``error`` says what; it is off the clock).

        Raises:
            ValueError, OverflowError: ``now`` is NaN, or infinite or 2**62 sub-ticks or
                more from ``t0`` (nothing is done).
        """
        cdef long long first = self._next
        cdef long long last = _subtick((now - self.t0) / self.interval + _EPSILON)
        cdef long long k, owed
        cdef int n = self.subticks
        cdef list attention = []
        cdef bint capped = False
        if last < first:
            return attention
        self._record_lateness(now - (self.t0 + first * self.interval))
        self._next = last + 1
        self.ticks += _floordiv(last, n) - _floordiv(first - 1, n)
        if last - first + 1 <= n:
            for k in range(first, last + 1):
                self._visit(<dict>self._buckets[k % n], 1, attention)
            return attention
        for k in range(last - n + 1, last + 1):
            owed = (k - first) // n + 1
            if owed > self.max_catchup:
                owed = self.max_catchup
                capped = True
            bucket = <dict>self._buckets[k % n]
            if bucket:
                self.catchup_frames += (owed - 1) * len(bucket)
                self._visit(bucket, <int>owed, attention)
        if capped:
            self.resyncs += 1
        return attention

    cdef int _visit(self, dict bucket, int frames, list attention) except -1:
        cdef Outlet outlet
        cdef bint reads = False
        if not bucket:
            return 0
        # A write can end a call (pause_writing) and take it off the clock: iterate a copy.
        # Every due frame is written before any caller is read, so reads never delay one.
        outlets = list(bucket)
        for item in outlets:
            outlet = <Outlet>item
            if outlet._bucket < 0:
                continue
            try:
                outlet._emit(frames)
            except Exception as exc:
                self._failed(outlet, exc, attention)
                continue
            if outlet._parser is not None:
                outlet._visits += 1
                reads = True
            elif outlet.watch and outlet.playout._state != PLAYING and outlet.playout._count == 0:
                attention.append(outlet)
        if not reads:
            return 0
        for item in outlets:
            outlet = <Outlet>item
            if outlet._bucket < 0 or outlet._parser is None:
                continue
            if outlet._visits >= self.read_every:
                outlet._visits = 0
                try:
                    outlet._read()
                except Exception as exc:
                    self._failed(outlet, exc, attention)
                    continue
            if outlet.status or (outlet.watch and outlet.playout._state != PLAYING
                                 and outlet.playout._count == 0):
                attention.append(outlet)
        return 0

    cdef int _failed(self, Outlet outlet, object exc, list attention) except -1:
        outlet.error = exc
        self.remove(outlet)
        attention.append(outlet)
        return 0

    cdef void _record_lateness(self, double lateness):
        if lateness > self.interval:
            self.late_wakeups += 1
        if lateness > self.max_lateness:
            self.max_lateness = lateness
        # Clamped before the conversion: a double beyond long's range has no defined one.
        cdef double bins = lateness * 1000 / _BIN_MS
        cdef long index = 0
        if bins >= _LATENESS_BINS - 1:
            index = _LATENESS_BINS - 1
        elif bins > 0:
            index = <long>bins
        self.lateness_bins[index] += 1


cdef long long _subtick(double x) except? -1:
    """``int(x)`` for a sub-tick index, which must fit the clock's 64-bit counters.

    Raises:
        ValueError: ``x`` is NaN (``now`` was).
        OverflowError: ``x`` is infinite, or 2**62 sub-ticks or more from ``t0``.
    """
    if x != x:
        raise ValueError("cannot convert float NaN to integer")
    if not -_MAX_SUBTICK < x < _MAX_SUBTICK:
        raise OverflowError(f"now is {x:g} sub-ticks from t0, beyond the clock's range")
    return <long long>x


cdef inline long long _floordiv(long long a, long long b) noexcept nogil:
    cdef long long q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q
