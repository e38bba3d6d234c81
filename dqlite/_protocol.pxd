# C-level declarations of dqlite/_protocol.pyx that other compiled modules use.
#
# dqlite._sockio receives straight into a Decoder's buffer with these (no
# memoryview per receive); ``decoder`` must be a dqlite._protocol.Decoder.

cdef char* decoder_free_space(object decoder, Py_ssize_t* room) except NULL
cdef int decoder_received(object decoder, Py_ssize_t nbytes) except -1
