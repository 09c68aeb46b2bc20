# A worker's access log buffer, for the compiled paths that log (getcore) to cimport.

cdef class LogBuffer:
    cdef char *buf
    cdef Py_ssize_t size, cap
    cdef readonly Py_ssize_t limit
    cdef int out
    cdef readonly long long lines, dropped
    cdef readonly int error

    # Room for n more bytes at the end: where to write them (then commit() them).
    cdef char *reserve(self, Py_ssize_t n) except NULL
    # n bytes written at reserve()'s pointer: one whole line, ending in "\n". The
    # buffer is written out once it holds ``limit`` bytes.
    cdef int commit(self, Py_ssize_t n) except -1
    # Write out every buffered line (one write() unless the kernel takes less).
    cdef Py_ssize_t drain(self) except -1
