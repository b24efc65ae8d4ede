# cython: subinterpreters_compatible=own_gil
#
# Opts in to an own GIL (the directive above, and CYTHON_USE_MODULE_STATE=1 when the C is
# compiled), but bump() counts its calls in a cdef global: a C static, one for the whole
# process, shared by every interpreter that imports the module.  The bug; Cython only warns.
cimport cython

cdef long calls  # zero, as a C static is: no assignment that each import would run again
cdef cython.pymutex lock  # interpreters with their own GIL call bump() at once


def bump():
    global calls
    with lock:
        calls += 1
        return calls
