/*
 * manygil._native, the calling thread: home calls (a pool worker switching back to the
 * main interpreter on its own OS thread), asynchronous exceptions, the current frames of
 * this interpreter's threads, and the guard that ends a child of os.fork().
 *
 * Process-global state owned here:
 *   home_calls       call_home() calls that returned (atomic; no lock)
 *   home_* (thread-local)  each thread's stack of homes: only that thread touches it
 *   fork_guard       set and cleared by the forking thread (sig_atomic_t; no lock),
 *                    read by the at-fork child handler, installed once
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"
#include <signal.h>   /* sig_atomic_t (ISO C) */

/* ------------------------------------------------------------------ threads */

/* set_async_exc(thread_id, exc_type) -> number of thread states changed.
 * Acts on the thread states of the CURRENT interpreter only, so it is called from a
 * helper thread inside the interpreter whose task is to be interrupted. */
PyObject *
native_set_async_exc(PyObject *mod, PyObject *args)
{
    unsigned long tid;
    PyObject *exc;
    if (!PyArg_ParseTuple(args, "kO:set_async_exc", &tid, &exc)) {
        return NULL;
    }
    if (exc == Py_None) {
        exc = NULL;
    }
    return PyLong_FromLong(PyThreadState_SetAsyncExc(tid, exc));
}

/* current_frames() -> {thread id: frame} for the threads of THIS interpreter only.
 * sys._current_frames() walks every interpreter and builds frame objects for
 * threads of interpreters whose GIL the caller does not hold, which crashes. */
PyObject *
native_current_frames(PyObject *mod, PyObject *unused)
{
    PyThreadState *me = PyThreadState_Get();
    PyInterpreterState *interp = PyThreadState_GetInterpreter(me);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t != NULL; t = PyThreadState_Next(t)) {
        PyFrameObject *frame = PyThreadState_GetFrame(t);
        if (frame == NULL) {
            continue;
        }
        PyObject *key = PyLong_FromUnsignedLong(t->thread_id);
        int rc = key == NULL ? -1 : PyDict_SetItem(result, key, (PyObject *)frame);
        Py_XDECREF(key);
        Py_DECREF(frame);
        if (rc < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

/* ------------------------------------------------------------------ home calls */

/*
 * A pool worker is a thread of the main interpreter that stays inside its own
 * interpreter.  Before it enters, it calls push_home(callback) in the main
 * interpreter: this thread's main-interpreter thread state and the callback are kept
 * in thread-local storage.  From inside the worker interpreter, call_home(data)
 * detaches the worker's thread state (releasing its GIL), re-attaches the home one
 * (taking the main GIL), calls callback(bytes) there and switches back, carrying bytes
 * both ways.  So a finished task's result is delivered and the next task fetched on
 * the same OS thread, with no hand-off to another thread.
 */
static MG_THREAD_LOCAL PyThreadState *home_tstate = NULL;
static MG_THREAD_LOCAL PyObject *home_callback = NULL;
/* Homes nest (an interpreter called from inside a pool worker): push saves the
 * current one, pop restores it. */
#define HOME_DEPTH 16
static MG_THREAD_LOCAL PyThreadState *home_tstates[HOME_DEPTH];
static MG_THREAD_LOCAL PyObject *home_callbacks[HOME_DEPTH];
static MG_THREAD_LOCAL int home_depth = 0;

PyObject *
native_push_home(PyObject *mod, PyObject *callback)
{
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "push_home() needs a callable");
        return NULL;
    }
    if (home_depth >= HOME_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "push_home(): interpreters nested too deeply");
        return NULL;
    }
    home_tstates[home_depth] = home_tstate;
    home_callbacks[home_depth] = home_callback;  /* the reference moves to the stack */
    home_depth++;
    home_callback = Py_NewRef(callback);
    home_tstate = PyThreadState_Get();
    Py_RETURN_NONE;
}

PyObject *
native_pop_home(PyObject *mod, PyObject *unused)
{
    if (home_depth == 0) {
        PyErr_SetString(PyExc_RuntimeError, "pop_home() without push_home()");
        return NULL;
    }
    if (home_tstate != PyThreadState_Get()) {
        /* the callback belongs to another interpreter: it can only be released there */
        PyErr_SetString(PyExc_RuntimeError, "pop_home() must be called where push_home() was");
        return NULL;
    }
    Py_CLEAR(home_callback);
    home_depth--;
    home_callback = home_callbacks[home_depth];
    home_tstate = home_tstates[home_depth];
    Py_RETURN_NONE;
}

static volatile int64_t home_calls = 0;           /* call_home() calls that returned (atomic) */

static int
home_called(void *seen)
{
    return mg_atomic_load_i64(&home_calls) != *(int64_t *)seen;
}

/* home_calls() -> how many call_home() calls have returned, process-wide. */
PyObject *
native_home_calls(PyObject *mod, PyObject *unused)
{
    return PyLong_FromLongLong(mg_atomic_load_i64(&home_calls));
}

/* await_home_call(seen, spin) -> bool: poll, without the GIL and for at most ``spin``
 * seconds, until a call_home() returns after home_calls() was ``seen``.  False: none
 * did in time, or the spin budget was spent (mg_poll_briefly) and none had yet. */
PyObject *
native_await_home_call(PyObject *mod, PyObject *args)
{
    long long seen;
    double spin;
    if (!PyArg_ParseTuple(args, "Ld:await_home_call", &seen, &spin)) {
        return NULL;
    }
    int64_t last = seen;
    return PyBool_FromLong(mg_poll_briefly(home_called, &last, spin));
}

PyObject *
native_call_home(PyObject *mod, PyObject *arg)
{
    PyThreadState *here = PyThreadState_Get();
    if (home_tstate == NULL || home_callback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call_home(): this thread has no home (set_home was not called)");
        return NULL;
    }
    if (home_tstate == here) {
        PyErr_SetString(PyExc_RuntimeError, "call_home(): already in the home interpreter");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    char *inbuf = PyMem_RawMalloc(in.len > 0 ? in.len : 1);
    if (inbuf == NULL) {
        PyBuffer_Release(&in);
        return PyErr_NoMemory();
    }
    memcpy(inbuf, in.buf, in.len);
    Py_ssize_t inlen = in.len;
    PyBuffer_Release(&in);

    char *outbuf = NULL;
    Py_ssize_t outlen = -1;   /* -1: None */
    int nomem = 0;
    /* The home call failed (its error cannot cross): what it said, for the error this
     * worker raises, so that it stops and the pool counts its tasks lost, instead of
     * waiting on its inbox for tasks the pool believes it runs. */
    char *failure = NULL;
    int failed = 0;

    PyThreadState *sub = PyEval_SaveThread();
    PyEval_RestoreThread(home_tstate);
    {
        PyObject *data = PyBytes_FromStringAndSize(inbuf, inlen);
        PyObject *res = data ? PyObject_CallOneArg(home_callback, data) : NULL;
        Py_XDECREF(data);
        if (res == NULL) {
            failed = 1;
            PyObject *exc = PyErr_GetRaisedException();
            PyObject *text = exc ? PyObject_Repr(exc) : NULL;
            const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
            if (utf8 != NULL) {
                size_t n = strlen(utf8) + 1;
                failure = PyMem_RawMalloc(n);
                if (failure != NULL) {
                    memcpy(failure, utf8, n);
                }
            }
            PyErr_Clear();  /* a failure of the repr itself */
            Py_XDECREF(text);
            PyErr_SetRaisedException(exc);
            PyErr_WriteUnraisable(home_callback);  /* its traceback, in the main interpreter */
        }
        else if (PyBytes_Check(res)) {
            outlen = PyBytes_GET_SIZE(res);
            outbuf = PyMem_RawMalloc(outlen > 0 ? outlen : 1);
            if (outbuf == NULL) {
                nomem = 1;
                outlen = -1;
            }
            else {
                memcpy(outbuf, PyBytes_AS_STRING(res), outlen);
            }
        }
        Py_XDECREF(res);
    }
    PyEval_SaveThread();
    mg_atomic_add_i64(&home_calls, 1);  /* after the home GIL is free */
    PyEval_RestoreThread(sub);

    PyMem_RawFree(inbuf);
    if (failed) {
        PyErr_Format(PyExc_RuntimeError, "manygil: the pool's call in the main interpreter failed (%s); "
                     "this worker stops, and its tasks fail", failure ? failure : "its error could not be read");
        PyMem_RawFree(failure);
        return NULL;
    }
    if (nomem) {
        return PyErr_NoMemory();
    }
    if (outlen < 0) {
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(outbuf, outlen);
    PyMem_RawFree(outbuf);
    return out;
}

/* ------------------------------------------------------------------ os.fork() */

/*
 * The child of os.fork() in a process that runs subinterpreters cannot go on: CPython
 * clears their state in the child (PyOS_AfterFork_Child), which hangs on 3.12 (a lock
 * a worker thread held) and aborts on 3.13+, before any os.register_at_fork hook of
 * the child runs.  manygil's "before" hook (Python) sets fork_guard to the number of
 * such interpreters; an at-fork child handler (mg_atfork_child_once: pthread_atfork),
 * which runs inside fork() before anything of CPython's, ends such a child at once,
 * saying why; the "after_in_parent"
 * hook clears it.  Process-global; set and cleared by the forking thread.
 */
static volatile sig_atomic_t fork_guard = 0;

static void
fork_guard_child(void)
{
    if (!fork_guard) {
        return;
    }
    static const char msg[] =
        "manygil: this child of os.fork() exits at once: its parent ran interpreters besides the "
        "main one, and CPython cannot go on in such a child (3.12 hangs, 3.13 and later abort); fork "
        "before creating interpreters, or use multiprocessing's 'forkserver' or 'spawn' start method\n";
    mg_exit_now(msg, sizeof(msg) - 1);
}

PyObject *
native_set_fork_guard(PyObject *mod, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    fork_guard = on;
    Py_RETURN_NONE;
}

void
mg_fork_guard_install_once(void)
{
    mg_atfork_child_once(fork_guard_child);
}
