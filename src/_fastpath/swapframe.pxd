# SWAP frame codec (spec/swap.md), for other fast paths to cimport.
from cpython.object cimport PyObject

cdef class FrameReader:
    cdef readonly Py_ssize_t max_frame
    cdef dict _segments              # message type (int) -> segment codes (bytes)
    cdef object _data                # the caller's bytes (never written) or our bytearray
    cdef Py_ssize_t _pos             # start of the unconsumed input in _data
    cdef bint _owned                 # _data is our bytearray (never exported while ours)
    cdef Py_ssize_t _cap             # bytes _data can hold without a realloc (a lower bound)
    cdef object _error               # str once failed, else None
    cdef unsigned char _uuid_key[16] # the last UUID decoded, reused while it repeats
    cdef object _uuid_obj

    cdef int _feed(self, object data, const unsigned char *p, Py_ssize_t n,
                   bint is_bytes) except -1
    cdef object _next(self)
    cdef list _decode(self, object owner, Py_ssize_t base, Py_ssize_t size, int t,
                      bytes codes, int reps)
    cdef object _uuid(self, const unsigned char *p)
    cdef int _release(self) except -1


cdef class FrameWriter:
    cdef readonly Py_ssize_t max_frame
    cdef readonly Py_ssize_t frames  # frames ended and not yet taken
    cdef PyObject *_obj              # the buffer: a bytes object only we hold, or NULL
    cdef char *_buf                  # its bytes
    cdef object _last_uuid           # the last uuid.UUID written, and its 16 bytes
    cdef unsigned char _last_uuid_bytes[16]
    cdef Py_ssize_t _size
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start           # offset of the open frame, -1 when none
    cdef Py_ssize_t _reps

    cdef char *_reserve(self, Py_ssize_t k) except NULL
    cdef int _lose(self) except -1
    cdef int _open(self) except -1
    cdef int _abandon(self) except -1
    cdef int _put_uuid(self, object u) except -1
    cdef int _put_string(self, object s) except -1
    cdef int _put_int(self, object v, int bits) except -1
    cdef int _put_bytes(self, object data) except -1
    cdef int _put_array(self, object values, char code) except -1
    cdef int _put_record(self, bytes codes, object values) except -1
    cdef int _end_record(self) except -1
