/*
 * manygil._native, waits: how a call waits for an entry with its GIL released.
 * mg_block_until() waits on an entry's condition variable for a predicate, in slices of
 * 100 ms so that the main thread sees signals such as Ctrl-C; mg_sem_take() takes one
 * unit of a channel's semaphore the same way, after an optional short poll; the
 * timeout arguments of every native call are read here.
 *
 * Process-global state owned here: none.  Locking rule (every file): the GIL is never
 * requested while an entry's mutex (or the registry's) is held, so a thread waiting for
 * a mutex never blocks a thread that holds the GIL of another interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

void
mg_init_cond(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
#if defined(__linux__)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
#endif
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

static void
now(struct timespec *ts)
{
#if defined(__linux__)
    clock_gettime(CLOCK_MONOTONIC, ts);
#else
    clock_gettime(CLOCK_REALTIME, ts);
#endif
}

/* A deadline ``secs`` from ``ts``; saturates at FOREVER_AFTER (a NaN counts as 0), so
 * that no caller can overflow a timespec and make pthread_cond_timedwait() fail. */
static void
add_seconds(struct timespec *ts, double secs)
{
    if (!(secs > 0)) {
        secs = 0;
    }
    if (secs > FOREVER_AFTER) {
        secs = FOREVER_AFTER;
    }
    time_t whole = (time_t)secs;
    long nsec = (long)((secs - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += nsec;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

static int
before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * Wait until ready(e) holds, then run act(e) under the entry's mutex.
 * Called with the GIL held.  timeout < 0 waits forever, 0 does not wait.
 * Returns 1 when done, 0 on timeout, -1 with an exception set (a signal such as
 * Ctrl-C arrived while the main thread waited).
 */
int
mg_block_until(entry *e, pthread_cond_t *c, ready_fn ready, act_fn act, void *arg,
            double timeout)
{
    /* Fast path with the GIL held: the mutex is only ever held for short C work. */
    pthread_cond_t *wake = NULL;
    pthread_mutex_lock(&e->mu);
    if (ready(e, arg)) {
        wake = act(e, arg);
        pthread_mutex_unlock(&e->mu);
        if (wake != NULL) {
            pthread_cond_signal(wake);
        }
        return 1;
    }
    pthread_mutex_unlock(&e->mu);
    if (timeout == 0) {
        return 0;
    }
    int has_deadline = timeout > 0 && timeout <= FOREVER_AFTER;
    struct timespec deadline;
    if (has_deadline) {
        now(&deadline);
        add_seconds(&deadline, timeout);
    }
    for (;;) {
        int result = -1;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&e->mu);
        struct timespec slice;
        now(&slice);
        add_seconds(&slice, 0.1);
        const struct timespec *until =
            (has_deadline && before(&deadline, &slice)) ? &deadline : &slice;
        for (;;) {
            if (ready(e, arg)) {
                wake = act(e, arg);
                result = 1;
                break;
            }
            /* anything but a wake-up ends the slice (an invalid deadline must not
             * spin here holding the mutex) */
            if (pthread_cond_timedwait(c, &e->mu, until) != 0) {
                if (ready(e, arg)) {
                    wake = act(e, arg);
                    result = 1;
                }
                else if (until == &deadline) {
                    result = 0;
                }
                break;
            }
        }
        pthread_mutex_unlock(&e->mu);
        if (wake != NULL) {
            pthread_cond_signal(wake);
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

/* Poll ready(arg) without the GIL for at most ``spin`` seconds: 1 once it is true.
 * Waking a sleeping thread costs tens of microseconds on many machines, more than a
 * short task, so a wait that is likely to end soon polls a little before it sleeps. */
int
mg_poll_briefly(int (*ready)(void *), void *arg, double spin)
{
    int got = 0;
    Py_BEGIN_ALLOW_THREADS
    struct timespec start, t;
    now(&start);
    for (unsigned n = 1;; n++) {
        if (ready(arg)) {
            got = 1;
            break;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if ((n & 63) == 0) {
            now(&t);
            if ((double)(t.tv_sec - start.tv_sec) + (t.tv_nsec - start.tv_nsec) * 1e-9 > spin) {
                break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    return got;
}

static int
sem_ready(void *sem)
{
    return sem_trywait((sem_t *)sem) == 0;
}

/*
 * Take one unit of a semaphore, waiting up to timeout (< 0: forever, 0: not at all)
 * with the GIL released, polling for ``spin`` seconds first.  Returns 1, 0 on
 * timeout, -1 with an exception set.
 */
int
mg_sem_take_spinning(sem_t *sem, double timeout, double spin)
{
    if (sem_trywait(sem) == 0) {
        return 1;
    }
    if (timeout == 0) {
        return 0;
    }
    if (spin > 0 && mg_poll_briefly(sem_ready, sem, spin)) {
        return 1;
    }
    int has_deadline = timeout > 0 && timeout <= FOREVER_AFTER;
    struct timespec deadline;
    if (has_deadline) {
        now(&deadline);
        add_seconds(&deadline, timeout);
    }
    for (;;) {
        int rc, err = 0, last_slice = 0;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        now(&until);
        add_seconds(&until, 0.1);
        if (has_deadline && before(&deadline, &until)) {
            until = deadline;
            last_slice = 1;
        }
        do {
#if defined(__linux__)
            rc = sem_clockwait(sem, CLOCK_MONOTONIC, &until);
#else
            rc = sem_timedwait(sem, &until);
#endif
            err = rc == 0 ? 0 : errno;
        } while (rc != 0 && err == EINTR);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            return 1;
        }
        if (last_slice) {
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

int
mg_sem_take(sem_t *sem, double timeout)
{
    return mg_sem_take_spinning(sem, timeout, 0);
}

