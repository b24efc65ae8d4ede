# mg_cy_state built Cython's default way: no directive, no module state.  The module does
# not opt in, so an interpreter with its own GIL refuses to import it.
calls = 0


def bump():
    global calls
    calls += 1
    return calls
