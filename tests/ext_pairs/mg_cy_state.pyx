# cython: subinterpreters_compatible=own_gil
#
# Opts in to an own GIL (the directive above, and CYTHON_USE_MODULE_STATE=1 when the C is
# compiled), and bump() counts its calls in a module global, which lives in the module's
# dict: one count per interpreter that imports the module.
calls = 0


def bump():
    global calls
    calls += 1
    return calls
