# Chunked transfer (HTTP/1.1) decoder and encoder, for other fast paths to cimport.

cdef enum ChunkedState:
    CHUNKED_SIZE = 0        # reading a chunk size line
    CHUNKED_DATA = 1        # inside chunk data
    CHUNKED_DATA_CR = 2     # expecting the CR after chunk data
    CHUNKED_DATA_LF = 3     # expecting the LF after chunk data
    CHUNKED_TRAILER = 4     # reading trailer lines after the last-chunk
    CHUNKED_DONE = 5

cdef class ChunkedDecoder:
    cdef readonly bint done
    cdef readonly list trailers
    cdef readonly unsigned long long body_size
    cdef Py_ssize_t _max_line
    cdef Py_ssize_t _max_trailer_size
    cdef ChunkedState _state
    cdef unsigned long long _remaining   # data bytes left in the current chunk
    cdef Py_ssize_t _trailer_bytes       # complete trailer lines so far, CRLFs included
    cdef bytearray _line                 # partial size or trailer line
    cdef object _error                   # str once failed, else None

    cdef object _feed(self, object data, const unsigned char *buf, Py_ssize_t n)
    cdef Py_ssize_t _feed_line(self, const unsigned char *buf, Py_ssize_t pos,
                               Py_ssize_t n) except -1
    cdef int _line_complete(self, const unsigned char *line, Py_ssize_t n) except -1
    cdef int _fail(self, str reason) except -1
