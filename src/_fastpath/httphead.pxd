# HTTP/1.x request-head parser, for other fast paths to cimport.

cdef class Request:
    # plain objects, readable and writable from Python like the twin's __slots__
    cdef public object method, target, path, query, version, headers, fields
    cdef public object keep_alive, content_length, chunked, expect_continue

# Parse the head at p[0:n] (request line, fields, final CRLFCRLF); raises HttpError.
cdef Request parse_head_ptr(const unsigned char *p, Py_ssize_t n)
# find_head_end over p[0:n] from ``start`` (already clamped to 0..n); -1 if absent.
cdef Py_ssize_t find_head_end_ptr(const unsigned char *p, Py_ssize_t n,
                                  Py_ssize_t start) noexcept nogil
