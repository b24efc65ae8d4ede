/*
 * manygil._native, waits: how a call waits for an entry with its GIL released.
 * mg_block_until() waits on an entry's condition variable for a predicate, in slices of
 * 100 ms so that the main thread sees signals such as Ctrl-C; mg_sem_take() takes one
 * unit of a channel's semaphore the same way, after an optional short poll; the
 * timeout arguments of every native call are read here.
 *
 * Process-global state owned here: the spin budget (below).  Locking rule (every
 * file): the GIL is never requested while an entry's mutex (or the registry's) is
 * held, so a thread waiting for a mutex never blocks a thread that holds the GIL of
 * another interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

/* A wait without a deadline wakes this often (seconds), to let the main thread see
 * signals such as Ctrl-C. */
#define SLICE 0.1

/*
 * Wait until ready(e) holds, then run act(e) under the entry's mutex.
 * Called with the GIL held.  timeout < 0 waits forever, 0 does not wait.
 * Returns 1 when done, 0 on timeout, -1 with an exception set (a signal such as
 * Ctrl-C arrived while the main thread waited).
 */
int
mg_block_until(entry *e, mg_cond *c, ready_fn ready, act_fn act, void *arg,
            double timeout)
{
    /* Fast path with the GIL held: the mutex is only ever held for short C work. */
    mg_cond *wake = NULL;
    mg_mutex_lock(&e->mu);
    if (ready(e, arg)) {
        wake = act(e, arg);
        mg_mutex_unlock(&e->mu);
        if (wake != NULL) {
            mg_cond_signal(wake);
        }
        return 1;
    }
    mg_mutex_unlock(&e->mu);
    if (timeout == 0) {
        return 0;
    }
    int64_t deadline = timeout > 0 && timeout <= FOREVER_AFTER ? mg_deadline(timeout) : MG_NEVER;
    for (;;) {
        int result = -1;
        Py_BEGIN_ALLOW_THREADS
        mg_mutex_lock(&e->mu);
        int64_t slice = mg_deadline(SLICE);
        int last_slice = deadline <= slice;
        int64_t until = last_slice ? deadline : slice;
        for (;;) {
            if (ready(e, arg)) {
                wake = act(e, arg);
                result = 1;
                break;
            }
            /* anything but a wake-up ends the slice (an invalid deadline must not
             * spin here holding the mutex) */
            if (mg_cond_timedwait(c, &e->mu, until) != 0) {
                if (ready(e, arg)) {
                    wake = act(e, arg);
                    result = 1;
                }
                else if (last_slice && mg_monotonic_ns() >= deadline) {
                    result = 0;   /* (a wait in whole milliseconds may end early) */
                }
                break;
            }
        }
        mg_mutex_unlock(&e->mu);
        if (wake != NULL) {
            mg_cond_signal(wake);
        }
        Py_END_ALLOW_THREADS
        if (result >= 0) {
            return result;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* A timeout object as seconds, with the errors of manygil._timeouts.check_timeout
 * (the one check; this one guards the native calls): not a number is a TypeError, a
 * NaN a ValueError; an int too large for a double is an infinity. */
int
mg_seconds_of(PyObject *obj, double *t)
{
    if (!PyUnicode_Check(obj) && !PyBytes_Check(obj) && !PyBool_Check(obj)) {
        *t = PyFloat_AsDouble(obj);
        if (*t == -1.0 && PyErr_Occurred()) {
            int overflow = 0;
            if (PyLong_Check(obj) && PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                (void)PyLong_AsLongLongAndOverflow(obj, &overflow);
                *t = overflow > 0 ? HUGE_VAL : -HUGE_VAL;
                return 0;
            }
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return -1;   /* the object's own error */
            }
            PyErr_Clear();
        }
        else if (isnan(*t)) {
            PyErr_SetString(PyExc_ValueError,
                            "timeout must be a number of seconds, got nan; pass None to wait forever");
            return -1;
        }
        else {
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, got %R", obj);
    return -1;
}

/* A wait's timeout: None (or too far off) is -1, forever; a negative one is 0. */
int
mg_parse_timeout(PyObject *obj, double *out)
{
    if (obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    double t;
    if (mg_seconds_of(obj, &t) < 0) {
        return -1;
    }
    *out = t < 0 ? 0 : t > FOREVER_AFTER ? -1.0 : t;
    return 0;
}

/*
 * The spin budget: how many threads, of every interpreter, may poll in
 * mg_poll_briefly() at once (the CPUs less one, read at the first poll), and how many
 * do now.  A poll beyond the budget gives up at once and the caller sleeps: polling
 * never takes the CPU a thread at work needs, whatever the number of pools, workers
 * and waiting callers.  Atomics only; a race at the first read stores the same value.
 */
static volatile int64_t spinners;
static volatile int64_t spin_budget = -1;

static int64_t
budget(void)
{
    int64_t b = mg_atomic_load_i64(&spin_budget);
    if (b < 0) {
        b = mg_cpu_count() - 1;   /* the CPUs less one: the thread at work keeps its own */
        mg_atomic_store_i64(&spin_budget, b);
    }
    return b;
}

/* spin_state() -> (spinners, budget): the threads polling now, and how many may. */
PyObject *
mg_spin_state(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("LL", (long long)mg_atomic_load_i64(&spinners), (long long)budget());
}

/* set_spin_budget(n) -> the budget before (for tests: n < 0 reads the CPUs again). */
PyObject *
mg_set_spin_budget(PyObject *mod, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int64_t before = budget();
    mg_atomic_store_i64(&spin_budget, n < 0 ? -1 : n);   /* -1: budget() reads the CPUs again */
    return PyLong_FromLongLong(before);
}

/* Poll ready(arg) without the GIL for at most ``spin`` seconds: 1 once it is true.
 * Waking a sleeping thread costs tens of microseconds on many machines, more than a
 * short task, so a wait that is likely to end soon polls a little before it sleeps,
 * within the spin budget (above). */
int
mg_poll_briefly(int (*ready)(void *), void *arg, double spin)
{
    int got = 0;
    if (mg_atomic_add_fetch_i64(&spinners, 1) > budget()) {
        mg_atomic_add_i64(&spinners, -1);
        return ready(arg);
    }
    Py_BEGIN_ALLOW_THREADS
    int64_t until = mg_deadline(spin);
    for (unsigned n = 1;; n++) {
        if (ready(arg)) {
            got = 1;
            break;
        }
        mg_cpu_relax();
        if ((n & 63) == 0) {
            if (mg_monotonic_ns() > until) {
                break;
            }
            /* The thread this one waits for may have been woken on this CPU (the kernel
             * often puts a wakee beside its waker): let it run rather than spin on. */
            mg_thread_yield();
        }
    }
    /* Before the GIL is taken back: the thread this one waited for may hold it (a
     * worker delivering in call_home) and poll next, within the budget. */
    mg_atomic_add_i64(&spinners, -1);
    Py_END_ALLOW_THREADS
    return got;
}

static int
sem_ready(void *sem)
{
    return mg_sem_trywait((mg_sem *)sem);
}

/*
 * Take one unit of a semaphore, waiting up to timeout (< 0: forever, 0: not at all)
 * with the GIL released, polling for ``spin`` seconds first.  Returns 1, 0 on
 * timeout, -1 with an exception set.
 */
int
mg_sem_take_spinning(mg_sem *sem, double timeout, double spin)
{
    if (mg_sem_trywait(sem)) {
        return 1;
    }
    if (timeout == 0) {
        return 0;
    }
    if (spin > 0 && mg_poll_briefly(sem_ready, sem, spin)) {
        return 1;
    }
    int64_t deadline = timeout > 0 && timeout <= FOREVER_AFTER ? mg_deadline(timeout) : MG_NEVER;
    for (;;) {
        int got;
        Py_BEGIN_ALLOW_THREADS
        int64_t slice = mg_deadline(SLICE);
        got = mg_sem_timedwait(sem, deadline < slice ? deadline : slice);
        Py_END_ALLOW_THREADS
        if (got) {
            return 1;
        }
        if (mg_monotonic_ns() >= deadline) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

int
mg_sem_take(mg_sem *sem, double timeout)
{
    return mg_sem_take_spinning(sem, timeout, 0);
}

