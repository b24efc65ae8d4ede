/*
 * manygil._native: process-wide objects that every interpreter can reach.
 *
 * Each interpreter that imports this module gets its own module object (multi-phase
 * init, per-interpreter GIL supported), but all of them talk to ONE registry that
 * lives in static C memory (_native_registry.c).  This file holds the module's method
 * table (every Python-visible name, whichever file implements it) and its init; it owns
 * no process-global state.  The files, by object kind (as CPython's Modules/_sqlite/):
 *
 *   _native.h           the entry and item types, and what the files share
 *   _native_registry.c  ids, reference counts, live counts; handles' dealloc
 *   _native_wait.c      waits with the GIL released, timeouts
 *   _native_chan.c      channels
 *   _native_sync.c      sync values and the Sync type
 *   _native_block.c     blocks and the BlockView type
 *   _native_home.c      call_home/push_home, async exceptions, frames, the fork guard
 *   _copier.c           the structural copier (copy_dumps/copy_loads)
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"
#include "_copier.h"

/* ------------------------------------------------------------------ module */

static PyMethodDef native_methods[] = {
    {"retain", native_retain, METH_O, "retain(id): take one more reference."},
    {"release", native_release, METH_O, "release(id): drop one reference; frees at zero."},
    {"refcount", native_refcount, METH_O, "refcount(id) -> int (0 once freed)."},
    {"live", native_live, METH_NOARGS, "live() -> counts of live objects by kind."},
    {"chan_create", chan_create, METH_VARARGS, "chan_create(maxsize, unbound=0) -> id"},
    {"block_from", block_from, METH_O, "block_from(buffer) -> id: a block holding a copy"},
    {"block_bytes", block_bytes, METH_VARARGS, "block_bytes(id, bytearray=False) -> a copy"},
    {"block_borrow", block_borrow, METH_O, "block_borrow(bytes) -> id: a block on the object's own memory"},
    {"block_disown", block_disown, METH_O, "block_disown(id): the owner lets go; a block still held keeps a copy"},
    {"home_calls", native_home_calls, METH_NOARGS, "home_calls() -> call_home() calls returned"},
    {"await_home_call", native_await_home_call, METH_VARARGS, "await_home_call(seen, spin) -> bool"},
    {"spin_state", mg_spin_state, METH_NOARGS, "spin_state() -> (threads polling now, how many may)"},
    {"set_spin_budget", mg_set_spin_budget, METH_O, "set_spin_budget(n) -> the budget before (n < 0: the CPUs less one)"},
    {"copied_into_blocks", native_copied_into_blocks, METH_NOARGS, "copied_into_blocks() -> bytes copied, ever"},
    {"chan_put", chan_put, METH_VARARGS, "chan_put(id, data, tag, timeout, pins=(), unbound=-1) -> bool"},
    {"chan_get", chan_get, METH_VARARGS, "chan_get(id, timeout, spin=0) -> (tag, bytes, pins) | None"},
    {"chan_info", chan_info, METH_O, "chan_info(id) -> (count, maxsize as given (<= 0: unbounded), unbound)"},
    {"sync_create", sync_create, METH_VARARGS, "sync_create(value, limit) -> id"},
    {"sync_acquire", sync_acquire, METH_VARARGS, "sync_acquire(id, timeout) -> bool"},
    {"sync_release", sync_release, METH_VARARGS, "sync_release(id, n) -> bool"},
    {"sync_add", sync_add, METH_VARARGS, "sync_add(id, delta) -> int"},
    {"sync_cas", sync_cas, METH_VARARGS, "sync_cas(id, expected, new) -> bool"},
    {"sync_set", sync_set, METH_VARARGS, "sync_set(id, value)"},
    {"sync_get", sync_get, METH_O, "sync_get(id) -> (value, aux, broken)"},
    {"sync_wait_nonzero", sync_wait_nonzero, METH_VARARGS, "sync_wait_nonzero(id, timeout) -> bool"},
    {"cond_enter", cond_enter, METH_O, "cond_enter(id)"},
    {"cond_wait", cond_wait, METH_VARARGS, "cond_wait(id, timeout) -> bool"},
    {"cond_notify", cond_notify, METH_VARARGS, "cond_notify(id, n) -> int"},
    {"barrier_wait", barrier_wait, METH_VARARGS, "barrier_wait(id, parties, timeout) -> int"},
    {"barrier_set", barrier_set, METH_VARARGS, "barrier_set(id, broken)"},
    {"block_create", block_create, METH_O, "block_create(nbytes) -> id"},
    {"block_fd", block_fd, METH_O, "block_fd(id) -> the memfd the block maps, or -1"},
    {"set_async_exc", native_set_async_exc, METH_VARARGS, "set_async_exc(tid, exc) -> int"},
    {"current_frames", native_current_frames, METH_NOARGS,
     "current_frames() -> {thread id: frame} of this interpreter's threads."},
    {"push_home", native_push_home, METH_O, "push_home(callback): this thread's home, until pop_home()."},
    {"pop_home", native_pop_home, METH_NOARGS, "pop_home(): back to the previous home."},
    {"call_home", native_call_home, METH_O, "call_home(data) -> bytes | None, run in the home interpreter."},
    {"copy_dumps", (PyCFunction)(void (*)(void))mg_copy_dumps, METH_FASTCALL,
     "copy_dumps(obj, leaf_dumper) -> bytes | None: a tree of built-ins, copied (_copier.c)"},
    {"copy_loads", (PyCFunction)(void (*)(void))mg_copy_loads, METH_FASTCALL,
     "copy_loads(data, leaf_loader) -> the value copy_dumps wrote"},
    {"set_fork_guard", native_set_fork_guard, METH_O,
     "set_fork_guard(on): end a child of the next fork() at once (interpreters run)."},
    {NULL, NULL, 0, NULL},
};

static int
native_exec(PyObject *mod)
{
    mg_fork_guard_install_once();
    PyInterpreterState *interp = PyInterpreterState_Get();
    void *id = (void *)(intptr_t)PyInterpreterState_GetID(interp);
    /* Where that fails (3.12 holds 32 such callbacks), the items stay: no error. */
#if PY_VERSION_HEX >= 0x030D0000
    if (PyUnstable_AtExit(interp, mg_unbind_interpreter, id) < 0) {
#else
    if (_Py_AtExit(interp, mg_unbind_interpreter, id) < 0) {
#endif
        PyErr_Clear();
    }
    PyObject *tp = PyType_FromModuleAndSpec(mod, &mg_blockview_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    if (PyModule_AddObject(mod, "BlockView", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    tp = PyType_FromModuleAndSpec(mod, &mg_syncobj_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    if (PyModule_AddObject(mod, "Sync", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "manygil._native",
    .m_doc = "Process-wide channels, memory blocks and sync objects shared by all interpreters.",
    .m_size = 0,
    .m_methods = native_methods,
    .m_slots = native_slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
