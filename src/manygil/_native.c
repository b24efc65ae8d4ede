/*
 * manygil._native: process-wide objects that every interpreter can reach.
 *
 * Each interpreter that imports this module gets its own module object (multi-phase
 * init, per-interpreter GIL supported), but all of them talk to ONE registry that
 * lives in static C memory and is guarded by a pthread mutex.  An entry is named by
 * an int64 id, which is shareable between interpreters as is, and is reference
 * counted: it is freed when the last reference, in any interpreter, is released.
 *
 *   kind      what it holds                         used by
 *   CHAN      a FIFO of byte strings, maxsize       interpreters.Queue, the pool's hot path
 *   BLOCK     a zeroed block of memory              shared.SharedBuffer / SharedArray
 *   SYNC      two int64 counters + a flag           sync.Lock/Semaphore/Event/Condition/Barrier,
 *                                                   shared.SharedValue
 *
 * Locking rule: the GIL is never requested while an entry's mutex (or the registry
 * mutex) is held, so a thread waiting for a mutex never blocks a thread that holds
 * the GIL of another interpreter.  Every wait releases the caller's GIL and wakes on a
 * condition variable (no polling); waits without a deadline wake every 100 ms only to
 * let the main thread see signals such as Ctrl-C.
 */
#define PY_SSIZE_T_CLEAN
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE   /* memfd_create */
#endif
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "_copier.h"
#if defined(__linux__)
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#endif

enum kind { KIND_CHAN = 1, KIND_BLOCK = 2, KIND_SYNC = 3 };

typedef struct item {
    struct item *next;
    char *data;
    Py_ssize_t len;
    int tag;
    /* Registry references the item owns (objects pickled inside it): handed to the
     * getter with the item, released here if the item is never taken. */
    int64_t *pins;
    Py_ssize_t npins;
    /* What becomes of the item once the interpreter that put it is closed (a queue's
     * unbounditems; 0 for the pool's own channels: kept) and whether that happened. */
    int64_t interp;
    int unbound;              /* UNB_KEEP, UNB_REMOVE, UNB_ERROR or UNB_UNBOUND */
    int state;                /* ST_LIVE, ST_UNBOUND (get() says so) or ST_REMOVED */
} item;

/* As CPython 3.14's queues number them (_crossinterp's UNBOUND_REMOVE=1, ERROR=2,
 * UNBOUND=3), with 0 for "kept". */
enum { UNB_KEEP = 0, UNB_REMOVE = 1, UNB_ERROR = 2, UNB_UNBOUND = 3 };
enum { ST_LIVE = 0, ST_UNBOUND = 1, ST_REMOVED = 2 };

typedef struct entry {
    struct entry *next;
    int64_t id;
    int64_t refs;
    int kind;
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* CHAN: not empty; SYNC: any change */
    pthread_cond_t cond2;     /* CHAN: not full */
    /* CHAN: a semaphore counts the items (and one the free places when bounded), so
     * a hand-off is one futex wake, not a condition variable plus a mutex. */
    item *head, *tail;
    Py_ssize_t count, maxsize;  /* count leaves out items removed but still linked */
    int unbound;              /* the default of chan_put(unbound=-1) */
    sem_t items, space;
    int has_sems;
    /* BLOCK */
    char *mem;
    Py_ssize_t size;
    int fd;                   /* a memfd that mem maps (Linux; another process may map it), or -1 */
    int borrowed;             /* made by block_borrow(): mem and lent are read under mu */
    int lent;                 /* borrowed: 1 while mem is the owner's object's, 0 once it is a
                               * copy of its own (freed with the entry), -1 once gone */
    int readers;              /* borrowed: copies out of mem in progress (under mu) */
    /* SYNC */
    int64_t value, aux, limit;
    int broken;
} entry;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
#define BUCKETS 4096   /* the registry: a hash table of entries by id */
static entry *registry[BUCKETS];
#define BUCKET(id) (&registry[(uint64_t)(id) & (BUCKETS - 1)])
static int64_t next_id = 1;
static int64_t live[4] = {0, 0, 0, 0};
static int64_t copied_into_blocks = 0;   /* bytes copied into blocks, ever (under reg_mu) */
static int64_t home_calls = 0;           /* call_home() calls that returned (atomic) */

static void
count_copied(Py_ssize_t size)
{
    pthread_mutex_lock(&reg_mu);
    copied_into_blocks += size;
    pthread_mutex_unlock(&reg_mu);
}

static void
init_cond(pthread_cond_t *c)
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

/* Waits longer than this (threading.TIMEOUT_MAX: 2**63 ns) are waits without a
 * deadline: a deadline that far off cannot be reached, and computing it would
 * overflow a timespec. */
#define FOREVER_AFTER 9223372036.0

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

static entry *
new_entry(int kind)
{
    entry *e = PyMem_RawCalloc(1, sizeof(entry));
    if (e == NULL) {
        return NULL;
    }
    e->kind = kind;
    e->refs = 1;
    pthread_mutex_init(&e->mu, NULL);
    init_cond(&e->cond);
    init_cond(&e->cond2);
    pthread_mutex_lock(&reg_mu);
    e->id = next_id++;
    e->next = *BUCKET(e->id);
    *BUCKET(e->id) = e;
    live[kind]++;
    pthread_mutex_unlock(&reg_mu);
    return e;
}

static void release_id(int64_t id);

static void
free_item(item *it)
{
    for (Py_ssize_t i = 0; i < it->npins; i++) {
        release_id(it->pins[i]);
    }
    PyMem_RawFree(it);   /* the item, its pins and its bytes are one allocation */
}

static void
free_entry(entry *e)
{
    item *it = e->head;
    while (it != NULL) {
        item *next = it->next;
        free_item(it);       /* never taken: its pins go with it */
        it = next;
    }
    if (e->mem != NULL && !(e->borrowed && e->lent != 0)) {
#if defined(__linux__)
        if (e->fd >= 0) {
            munmap(e->mem, e->size > 0 ? e->size : 1);
            close(e->fd);
        }
        else
#endif
        PyMem_RawFree(e->mem);
    }
    if (e->has_sems) {
        sem_destroy(&e->items);
        sem_destroy(&e->space);
    }
    pthread_cond_destroy(&e->cond);
    pthread_cond_destroy(&e->cond2);
    pthread_mutex_destroy(&e->mu);
    PyMem_RawFree(e);
}

/* Find an entry and take a reference for the duration of an operation. */
static entry *
acquire_entry(int64_t id, int kind)
{
    pthread_mutex_lock(&reg_mu);
    entry *e = *BUCKET(id);
    while (e != NULL && e->id != id) {
        e = e->next;
    }
    if (e != NULL && (kind == 0 || e->kind == kind)) {
        e->refs++;
    }
    else {
        e = NULL;
    }
    pthread_mutex_unlock(&reg_mu);
    if (e == NULL) {
        PyErr_Format(PyExc_LookupError, "no live manygil object with id %lld", (long long)id);
    }
    return e;
}

/* acquire_entry() for a METH_O function whose argument is the id */
static entry *
entry_from_arg(PyObject *arg, int kind)
{
    int64_t id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return acquire_entry(id, kind);
}

/* One more reference to an entry that the caller already holds one to. */
static void
retain_entry(entry *e)
{
    pthread_mutex_lock(&reg_mu);
    e->refs++;
    pthread_mutex_unlock(&reg_mu);
}

static void
release_entry(entry *e)
{
    int dead = 0;
    pthread_mutex_lock(&reg_mu);
    if (--e->refs == 0) {
        entry **p = BUCKET(e->id);
        while (*p != e) {
            p = &(*p)->next;
        }
        *p = e->next;
        live[e->kind]--;
        dead = 1;
    }
    pthread_mutex_unlock(&reg_mu);
    if (dead) {
        free_entry(e);
    }
}

/* Drop one reference to an id, if it is still live (no exception either way). */
static void
release_id(int64_t id)
{
    pthread_mutex_lock(&reg_mu);
    entry *e = *BUCKET(id);
    while (e != NULL && e->id != id) {
        e = e->next;
    }
    pthread_mutex_unlock(&reg_mu);
    if (e != NULL) {
        release_entry(e);
    }
}


/*
 * Wait until ready(e) holds, then run act(e) under the entry's mutex.
 * Called with the GIL held.  timeout < 0 waits forever, 0 does not wait.
 * Returns 1 when done, 0 on timeout, -1 with an exception set (a signal such as
 * Ctrl-C arrived while the main thread waited).
 */
typedef int (*ready_fn)(entry *e, void *arg);
/* Runs under the entry's mutex once ready; returns a condition to signal after the
 * mutex is released (signalling while holding it would wake a thread only to block
 * it again on the mutex), or NULL. */
typedef pthread_cond_t *(*act_fn)(entry *e, void *arg);

static int
block_until(entry *e, pthread_cond_t *c, ready_fn ready, act_fn act, void *arg,
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
static int
seconds_of(PyObject *obj, double *t)
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
static int
parse_timeout(PyObject *obj, double *out)
{
    if (obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    double t;
    if (seconds_of(obj, &t) < 0) {
        return -1;
    }
    *out = t < 0 ? 0 : t > FOREVER_AFTER ? -1.0 : t;
    return 0;
}

/* ------------------------------------------------------------------ generic */

static PyObject *
native_retain(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, 0);  /* the reference taken here is kept */
    if (e == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
native_release(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, 0);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&reg_mu);
    e->refs--;                        /* the caller's reference */
    pthread_mutex_unlock(&reg_mu);
    release_entry(e);                 /* ours; frees at zero */
    Py_RETURN_NONE;
}

static PyObject *
native_refcount(PyObject *mod, PyObject *arg)
{
    int64_t id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int64_t refs = 0;
    pthread_mutex_lock(&reg_mu);
    for (entry *e = *BUCKET(id); e != NULL; e = e->next) {
        if (e->id == id) {
            refs = e->refs;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return PyLong_FromLongLong(refs);
}

static PyObject *
native_live(PyObject *mod, PyObject *unused)
{
    int64_t c, b, s;
    pthread_mutex_lock(&reg_mu);
    c = live[KIND_CHAN];
    b = live[KIND_BLOCK];
    s = live[KIND_SYNC];
    pthread_mutex_unlock(&reg_mu);
    return Py_BuildValue("{s:L,s:L,s:L}", "channels", (long long)c, "blocks",
                         (long long)b, "syncs", (long long)s);
}

/* ------------------------------------------------------------------ channels */

/* Poll ready(arg) without the GIL for at most ``spin`` seconds: 1 once it is true.
 * Waking a sleeping thread costs tens of microseconds on many machines, more than a
 * short task, so a wait that is likely to end soon polls a little before it sleeps. */
static int
poll_briefly(int (*ready)(void *), void *arg, double spin)
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
static int
sem_take_spinning(sem_t *sem, double timeout, double spin)
{
    if (sem_trywait(sem) == 0) {
        return 1;
    }
    if (timeout == 0) {
        return 0;
    }
    if (spin > 0 && poll_briefly(sem_ready, sem, spin)) {
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

static int
sem_take(sem_t *sem, double timeout)
{
    return sem_take_spinning(sem, timeout, 0);
}

/* chan_create(maxsize, unbound=0) -> id; ``unbound``: see item (0: items are kept). */
static PyObject *
chan_create(PyObject *mod, PyObject *args)
{
    Py_ssize_t maxsize;
    int unbound = UNB_KEEP;
    if (!PyArg_ParseTuple(args, "n|i:chan_create", &maxsize, &unbound)) {
        return NULL;
    }
    if (unbound < UNB_KEEP || unbound > UNB_UNBOUND) {
        PyErr_Format(PyExc_ValueError, "chan_create(): unbound must be 0-3, got %d", unbound);
        return NULL;
    }
    entry *e = new_entry(KIND_CHAN);
    if (e == NULL) {
        return PyErr_NoMemory();
    }
    e->unbound = unbound;
    e->limit = maxsize;   /* as given (chan_info reports it, as 3.14's Queue.maxsize does) */
    e->maxsize = maxsize > 0 ? maxsize : 0;
    sem_init(&e->items, 0, 0);
    sem_init(&e->space, 0, e->maxsize > 0 && e->maxsize < SEM_VALUE_MAX ? (unsigned)e->maxsize : 0);
    if (e->maxsize >= SEM_VALUE_MAX) {
        e->maxsize = 0;
    }
    e->has_sems = 1;
    return PyLong_FromLongLong(e->id);
}

/* chan_put(id, data, tag, timeout, pins=(), unbound=-1) -> bool (False: still full at
 * the deadline).  pins: ids whose references the caller hands over to the item (see
 * item); unbound: what becomes of it once this interpreter is closed (-1: the
 * channel's default). */
static PyObject *
chan_put(PyObject *mod, PyObject *args)
{
    long long id;
    Py_buffer buf;
    int tag, unbound = -1;
    PyObject *timeout_obj, *pins_obj = NULL;
    double timeout;
    if (!PyArg_ParseTuple(args, "Ly*iO|O!i:chan_put", &id, &buf, &tag, &timeout_obj,
                          &PyTuple_Type, &pins_obj, &unbound)) {
        return NULL;
    }
    if (unbound < -1 || unbound > UNB_UNBOUND) {
        PyBuffer_Release(&buf);
        PyErr_Format(PyExc_ValueError, "chan_put(): unbound must be -1-3, got %d", unbound);
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    Py_ssize_t npins = pins_obj != NULL ? PyTuple_GET_SIZE(pins_obj) : 0;
    size_t head = sizeof(item) + (size_t)npins * sizeof(int64_t);
    item *it = PyMem_RawMalloc(head + (buf.len > 0 ? buf.len : 1));
    if (it == NULL) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    it->next = NULL;
    it->pins = (int64_t *)(it + 1);
    it->npins = 0;
    for (Py_ssize_t i = 0; i < npins; i++) {
        long long pin = PyLong_AsLongLong(PyTuple_GET_ITEM(pins_obj, i));
        if (pin == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&buf);
            PyMem_RawFree(it);
            return NULL;
        }
        it->pins[i] = pin;
    }
    it->data = (char *)it + head;   /* one allocation for the item, its pins and bytes */
    memcpy(it->data, buf.buf, buf.len);
    it->len = buf.len;
    it->tag = tag;
    it->state = ST_LIVE;
    it->interp = PyInterpreterState_GetID(PyInterpreterState_Get());
    PyBuffer_Release(&buf);
    entry *e = acquire_entry(id, KIND_CHAN);
    if (e == NULL) {
        PyMem_RawFree(it);   /* the caller still owns the pins */
        return NULL;
    }
    it->unbound = unbound >= 0 ? unbound : e->unbound;
    if (e->maxsize > 0) {
        int rc = sem_take(&e->space, timeout);
        if (rc != 1) {
            release_entry(e);
            PyMem_RawFree(it);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_FALSE;
        }
    }
    it->npins = npins;   /* from here on the item owns them */
    pthread_mutex_lock(&e->mu);
    if (e->tail == NULL) {
        e->head = e->tail = it;
    }
    else {
        e->tail->next = it;
        e->tail = it;
    }
    e->count++;
    pthread_mutex_unlock(&e->mu);
    sem_post(&e->items);
    release_entry(e);
    Py_RETURN_TRUE;
}

/* chan_get(id, timeout, spin=0) -> (tag, bytes, pins) or None at the deadline; the
 * caller owns the pins (a tuple of ids) and releases them once it has loaded the bytes.
 * ``spin``: seconds to poll (without the GIL) before sleeping. */
static PyObject *
chan_get(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout, spin = 0;
    if (!PyArg_ParseTuple(args, "LO|d:chan_get", &id, &timeout_obj, &spin)) {
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_CHAN);
    if (e == NULL) {
        return NULL;
    }
    item *it;
    for (;;) {
        int rc = sem_take_spinning(&e->items, timeout, spin);
        if (rc != 1) {
            release_entry(e);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        pthread_mutex_lock(&e->mu);
        it = e->head;
        e->head = it->next;
        if (e->head == NULL) {
            e->tail = NULL;
        }
        if (it->state != ST_REMOVED) {
            e->count--;      /* a removed one was counted off when it was removed */
        }
        pthread_mutex_unlock(&e->mu);
        if (e->maxsize > 0) {
            sem_post(&e->space);
        }
        if (it->state != ST_REMOVED) {
            break;
        }
        free_item(it);       /* removed while this get waited for it: the next one */
    }
    release_entry(e);
    if (it->state == ST_UNBOUND) {
        /* Its interpreter was closed: (-unbound, b"", ()) says what to return instead. */
        int unbound = it->unbound;
        free_item(it);
        return Py_BuildValue("(iy#())", -unbound, "", (Py_ssize_t)0);
    }
    PyObject *data = PyBytes_FromStringAndSize(it->data, it->len);
    PyObject *pins = PyTuple_New(it->npins);
    if (data == NULL || pins == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(pins);
        free_item(it);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < it->npins; i++) {
        PyObject *pin = PyLong_FromLongLong(it->pins[i]);
        if (pin == NULL) {
            Py_DECREF(data);
            Py_DECREF(pins);
            free_item(it);
            return NULL;
        }
        PyTuple_SET_ITEM(pins, i, pin);
    }
    int tag = it->tag;
    PyMem_RawFree(it);   /* the pins now belong to the caller */
    return Py_BuildValue("(iNN)", tag, data, pins);
}

static PyObject *
chan_info(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, KIND_CHAN);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    Py_ssize_t count = e->count, maxsize = (Py_ssize_t)e->limit;
    int unbound = e->unbound;
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    return Py_BuildValue("(nni)", count, maxsize, unbound);
}

/*
 * An interpreter that imported this module is being closed (its atexit): the items it
 * put in a queue become unbound, as the queue's (or the put's) unbounditems says, as
 * CPython 3.14's queues do.  UNB_REMOVE items leave the queue: unlinked now when no
 * get() waits for them, else marked so that the get() that takes them skips them.
 */
static void
unbind_interpreter(void *data)
{
    int64_t interp = (int64_t)(intptr_t)data;
    pthread_mutex_lock(&reg_mu);
    Py_ssize_t n = live[KIND_CHAN], found = 0;
    entry **chans = n > 0 ? PyMem_RawMalloc((size_t)n * sizeof(entry *)) : NULL;
    for (int b = 0; chans != NULL && b < BUCKETS; b++) {
        for (entry *e = registry[b]; e != NULL && found < n; e = e->next) {
            if (e->kind == KIND_CHAN) {
                e->refs++;
                chans[found++] = e;
            }
        }
    }
    pthread_mutex_unlock(&reg_mu);
    for (Py_ssize_t i = 0; i < found; i++) {
        entry *e = chans[i];
        item *gone = NULL;   /* unlinked here: freed once the mutex is released */
        int freed = 0;
        pthread_mutex_lock(&e->mu);
        item *prev = NULL, *it = e->head;
        while (it != NULL) {
            item *next = it->next;
            if (it->interp == interp && it->unbound != UNB_KEEP && it->state == ST_LIVE) {
                if (it->unbound != UNB_REMOVE) {
                    it->state = ST_UNBOUND;
                }
                else if (sem_trywait(&e->items) == 0) {
                    if (prev == NULL) {
                        e->head = next;
                    }
                    else {
                        prev->next = next;
                    }
                    if (e->tail == it) {
                        e->tail = prev;
                    }
                    e->count--;
                    it->next = gone;
                    gone = it;
                    freed++;
                    it = next;
                    continue;
                }
                else {
                    it->state = ST_REMOVED;   /* a get() that waits takes it: it skips it */
                    e->count--;
                }
            }
            prev = it;
            it = next;
        }
        pthread_mutex_unlock(&e->mu);
        while (gone != NULL) {
            item *next = gone->next;
            free_item(gone);
            gone = next;
        }
        for (int k = 0; k < freed && e->maxsize > 0; k++) {
            sem_post(&e->space);
        }
        release_entry(e);
    }
    PyMem_RawFree(chans);
}

/* ------------------------------------------------------------------ sync */

static PyObject *
sync_create(PyObject *mod, PyObject *args)
{
    long long value, limit;
    if (!PyArg_ParseTuple(args, "LL:sync_create", &value, &limit)) {
        return NULL;
    }
    entry *e = new_entry(KIND_SYNC);
    if (e == NULL) {
        return PyErr_NoMemory();
    }
    e->value = value;
    e->limit = limit;
    return PyLong_FromLongLong(e->id);
}

static int
sync_positive(entry *e, void *arg)
{
    return e->value > 0;
}

static pthread_cond_t *
sync_take(entry *e, void *arg)
{
    e->value--;
    return NULL;
}

/* acquire(id, timeout) -> bool: wait until value > 0, then decrement it */
static PyObject *
sync_acquire(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:sync_acquire", &id, &timeout_obj)) {
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = block_until(e, &e->cond, sync_positive, sync_take, NULL, timeout);
    release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* release(id, n) -> bool: add n to value; False (and no change) if limit would pass,
 * OverflowError (and no change) if 64 bits would */
static PyObject *
sync_release(PyObject *mod, PyObject *args)
{
    long long id, n;
    if (!PyArg_ParseTuple(args, "LL:sync_release", &id, &n)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int ok = 1;
    int64_t sum;
    pthread_mutex_lock(&e->mu);
    if (__builtin_add_overflow(e->value, n, &sum)) {
        ok = e->limit >= 0 ? 0 : -1;   /* past any limit; else past 64 bits */
    }
    else if (e->limit >= 0 && sum > e->limit) {
        ok = 0;
    }
    else {
        e->value = sum;
        if (n == 1) {
            pthread_cond_signal(&e->cond);
        }
        else {
            pthread_cond_broadcast(&e->cond);
        }
    }
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    if (ok < 0) {
        return PyErr_Format(PyExc_OverflowError, "the count would pass 2**63 - 1");
    }
    return PyBool_FromLong(ok);
}

/* add(id, delta) -> new value (atomic), wakes waiters; OverflowError (and no change)
 * when the value would leave the 64-bit range */
static PyObject *
sync_add(PyObject *mod, PyObject *args)
{
    long long id, delta;
    if (!PyArg_ParseTuple(args, "LL:sync_add", &id, &delta)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int64_t v;
    int overflow = __builtin_add_overflow(e->value, delta, &v);
    if (!overflow) {
        e->value = v;
        pthread_cond_broadcast(&e->cond);
    }
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    if (overflow) {
        return PyErr_Format(PyExc_OverflowError, "the value would leave the range [-2**63, 2**63 - 1]");
    }
    return PyLong_FromLongLong(v);
}

/* set(id, value): store a value, wake waiters */
static PyObject *
sync_set(PyObject *mod, PyObject *args)
{
    long long id, value;
    if (!PyArg_ParseTuple(args, "LL:sync_set", &id, &value)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    e->value = value;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    Py_RETURN_NONE;
}

/* cas(id, expected, new) -> bool */
static PyObject *
sync_cas(PyObject *mod, PyObject *args)
{
    long long id, expected, value;
    if (!PyArg_ParseTuple(args, "LLL:sync_cas", &id, &expected, &value)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int ok = 0;
    pthread_mutex_lock(&e->mu);
    if (e->value == expected) {
        e->value = value;
        ok = 1;
        pthread_cond_broadcast(&e->cond);
    }
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    return PyBool_FromLong(ok);
}

/* get(id) -> (value, aux, broken) */
static PyObject *
sync_get(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int64_t v = e->value, a = e->aux;
    int b = e->broken;
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    return Py_BuildValue("(LLi)", (long long)v, (long long)a, b);
}

static int
sync_nonzero(entry *e, void *arg)
{
    return e->value != 0;
}

static pthread_cond_t *
nothing(entry *e, void *arg)
{
    return NULL;
}

/* wait_nonzero(id, timeout) -> bool (Event.wait) */
static PyObject *
sync_wait_nonzero(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:sync_wait_nonzero", &id, &timeout_obj)) {
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = block_until(e, &e->cond, sync_nonzero, nothing, NULL, timeout);
    release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/*
 * Condition variables: value = pending notifications, aux = waiters.
 * cond_enter(id) registers a waiter before the caller releases its lock, so a
 * notify that comes in between is not lost.  cond_wait(id, timeout) then takes one
 * notification or, at the deadline, unregisters.
 */
static PyObject *
cond_enter(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    e->aux++;
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    Py_RETURN_NONE;
}

static pthread_cond_t *
cond_take(entry *e, void *arg)
{
    e->value--;
    e->aux--;
    return NULL;
}

static PyObject *
cond_wait(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:cond_wait", &id, &timeout_obj)) {
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = block_until(e, &e->cond, sync_positive, cond_take, NULL, timeout);
    if (rc != 1) {
        pthread_mutex_lock(&e->mu);
        if (e->value > 0) {       /* notified right at the deadline: take it */
            cond_take(e, NULL);
            rc = rc < 0 ? rc : 1;
        }
        else {
            e->aux--;
        }
        pthread_mutex_unlock(&e->mu);
    }
    release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* cond_notify(id, n) -> how many waiters were woken */
static PyObject *
cond_notify(PyObject *mod, PyObject *args)
{
    long long id, n;
    if (!PyArg_ParseTuple(args, "LL:cond_notify", &id, &n)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int64_t unwoken = e->aux - e->value;
    if (n < 0 || n > unwoken) {
        n = unwoken;
    }
    if (n > 0) {
        e->value += n;
        pthread_cond_broadcast(&e->cond);
    }
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    return PyLong_FromLongLong(n > 0 ? n : 0);
}

/*
 * Barriers: value = threads waiting in this generation, aux = generation,
 * limit = reset epoch, broken = the barrier was aborted or a wait timed out.
 */
typedef struct {
    int64_t generation;
    int64_t epoch;
} barrier_arg;

static int
barrier_done(entry *e, void *arg)
{
    barrier_arg *ba = (barrier_arg *)arg;
    return e->broken || e->aux != ba->generation || e->limit != ba->epoch;
}

/* barrier_wait(id, parties, timeout) -> index, or -1 when the barrier is broken */
static PyObject *
barrier_wait(PyObject *mod, PyObject *args)
{
    long long id, parties;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LLO:barrier_wait", &id, &parties, &timeout_obj)) {
        return NULL;
    }
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    barrier_arg ba;
    int64_t index;
    pthread_mutex_lock(&e->mu);
    if (e->broken) {
        pthread_mutex_unlock(&e->mu);
        release_entry(e);
        return PyLong_FromLong(-1);
    }
    ba.generation = e->aux;
    ba.epoch = e->limit;
    index = e->value++;
    if (e->value == parties) {
        e->value = 0;
        e->aux++;
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->mu);
        release_entry(e);
        return PyLong_FromLongLong(parties - 1 - index);
    }
    pthread_mutex_unlock(&e->mu);
    int rc = block_until(e, &e->cond, barrier_done, nothing, &ba, timeout);
    pthread_mutex_lock(&e->mu);
    int ok = rc == 1 && !e->broken && e->aux != ba.generation && e->limit == ba.epoch;
    if (!ok && e->aux == ba.generation && e->limit == ba.epoch) {
        e->value--;               /* it leaves without the barrier opening */
        if (!e->broken) {
            e->broken = 1;        /* a timeout or an interrupt breaks the barrier */
            pthread_cond_broadcast(&e->cond);
        }
    }
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(ok ? parties - 1 - index : -1);
}

/* barrier_set(id, broken): abort (1) or reset (0) */
static PyObject *
barrier_set(PyObject *mod, PyObject *args)
{
    long long id;
    int broken;
    if (!PyArg_ParseTuple(args, "Lp:barrier_set", &id, &broken)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    if (broken) {
        e->broken = 1;
    }
    else {
        /* a new epoch: waiters of the old one see the barrier as broken */
        e->limit++;
        e->value = 0;
        e->broken = 0;
    }
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->mu);
    release_entry(e);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Sync objects */

/*
 * Sync: a handle that holds one reference to a SYNC entry and keeps its pointer, so
 * that acquire()/release() skip the registry: an uncontended acquire+release is two
 * mutex operations and two C calls.  manygil.sync.Lock and Semaphore subclass it.
 */
/* The layout every handle type starts with: one reference to one registry entry. */
typedef struct {
    PyObject_HEAD
    entry *e;
} Handle;

/* tp_dealloc of every handle type: drop the entry's reference, then the object. */
static void
handle_dealloc(PyObject *op)
{
    Handle *self = (Handle *)op;
    PyTypeObject *tp = Py_TYPE(op);
    if (self->e != NULL) {
        release_entry(self->e);
        self->e = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

typedef Handle Sync;

static int
sync_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    long long id;
    if (!PyArg_ParseTuple(args, "L:Sync", &id)) {
        return -1;
    }
    entry *e = acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return -1;
    }
    Sync *self = (Sync *)op;
    if (self->e != NULL) {
        release_entry(self->e);
    }
    self->e = e;
    return 0;
}

static entry *
sync_entry(PyObject *op)
{
    entry *e = ((Sync *)op)->e;
    if (e == NULL) {
        PyErr_SetString(PyExc_ValueError, "this sync object is not initialised");
    }
    return e;
}

/* acquire(blocking=True, timeout=-1 or None) -> bool, as threading.Lock.acquire */
static PyObject *
syncobj_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* The entry is read once the arguments are: reading them runs user code
     * (__bool__, __float__), which may call __init__ again and free the entry. */
    int blocking = 1;
    PyObject *timeout_obj = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes at most 2 arguments");
        return NULL;
    }
    if (nargs >= 1 && (blocking = PyObject_IsTrue(args[0])) < 0) {
        return NULL;
    }
    if (nargs == 2) {
        timeout_obj = args[1];
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject *value = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(name, "blocking") == 0) {
            if ((blocking = PyObject_IsTrue(value)) < 0) {
                return NULL;
            }
        }
        else if (PyUnicode_CompareWithASCIIString(name, "timeout") == 0) {
            timeout_obj = value;
        }
        else {
            PyErr_Format(PyExc_TypeError, "acquire() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
    }
    double timeout = -1.0;
    if (timeout_obj != NULL && timeout_obj != Py_None) {
        if (seconds_of(timeout_obj, &timeout) < 0) {
            return NULL;
        }
        if (!blocking && timeout != -1.0) {
            PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
            return NULL;
        }
        if (timeout < 0 && timeout != -1.0) {
            PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
            return NULL;
        }
        if (timeout > FOREVER_AFTER) {
            timeout = -1.0;
        }
    }
    if (!blocking) {
        timeout = 0;
    }
    entry *e = sync_entry(op);
    if (e == NULL) {
        return NULL;
    }
    /* uncontended fast path */
    pthread_mutex_lock(&e->mu);
    if (e->value > 0) {
        e->value--;
        pthread_mutex_unlock(&e->mu);
        Py_RETURN_TRUE;
    }
    pthread_mutex_unlock(&e->mu);
    /* The wait holds a reference of its own: without the GIL, the handle may let go of
     * its entry meanwhile (__init__ called again). */
    retain_entry(e);
    int rc = block_until(e, &e->cond, sync_positive, sync_take, NULL, timeout);
    release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* release(): add one; RuntimeError if that would pass the limit (an unlocked lock) */
static PyObject *
syncobj_release(PyObject *op, PyObject *unused)
{
    entry *e = sync_entry(op);
    if (e == NULL) {
        return NULL;
    }
    int ok = 1;
    pthread_mutex_lock(&e->mu);
    if (e->limit >= 0 && e->value >= e->limit) {
        ok = 0;
    }
    else if (e->value == INT64_MAX) {
        ok = -1;
    }
    else {
        e->value++;
    }
    pthread_mutex_unlock(&e->mu);
    if (ok == 0) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    if (ok < 0) {
        PyErr_Format(PyExc_OverflowError, "cannot release this %s: its count would pass 2**63 - 1",
                     Py_TYPE(op)->tp_name);
        return NULL;
    }
    pthread_cond_signal(&e->cond);
    Py_RETURN_NONE;
}

static PyObject *
syncobj_enter(PyObject *op, PyObject *unused)
{
    return syncobj_acquire(op, NULL, 0, NULL);
}

static PyObject *
syncobj_exit(PyObject *op, PyObject *args)
{
    PyObject *res = syncobj_release(op, NULL);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *
syncobj_get_id(PyObject *op, void *closure)
{
    entry *e = ((Sync *)op)->e;
    return PyLong_FromLongLong(e ? e->id : 0);
}

static PyObject *
syncobj_get_count(PyObject *op, void *closure)
{
    entry *e = sync_entry(op);
    if (e == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int64_t v = e->value;
    pthread_mutex_unlock(&e->mu);
    return PyLong_FromLongLong(v);
}

static PyMethodDef syncobj_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))syncobj_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", syncobj_release, METH_NOARGS, "release(): add one to the count"},
    {"__enter__", syncobj_enter, METH_NOARGS, "acquire()"},
    {"__exit__", syncobj_exit, METH_VARARGS, "release()"},
    {NULL},
};

static PyGetSetDef syncobj_getset[] = {
    {"id", syncobj_get_id, NULL, "the registry id", NULL},
    {"_count", syncobj_get_count, NULL, "the count now (free places)", NULL},
    {NULL},
};

static PyType_Slot syncobj_slots[] = {
    {Py_tp_doc, "A handle on a process-wide counting lock; holds one reference to it."},
    {Py_tp_init, sync_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_methods, syncobj_methods},
    {Py_tp_getset, syncobj_getset},
    {0, NULL},
};

static PyType_Spec syncobj_spec = {
    .name = "manygil._native.Sync",
    .basicsize = sizeof(Sync),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = syncobj_slots,
};

/* ------------------------------------------------------------------ blocks */

/* A BLOCK entry that takes over mem (freed with it); its id, or NULL (mem freed). */
static PyObject *
new_block(char *mem, Py_ssize_t size)
{
    entry *e = new_entry(KIND_BLOCK);
    if (e == NULL) {
        PyMem_RawFree(mem);
        return PyErr_NoMemory();
    }
    e->mem = mem;
    e->size = size;
    e->fd = -1;
    return PyLong_FromLongLong(e->id);
}

#if defined(__linux__)
/* A zeroed block in a memfd, so that a process worker can map the same memory
 * (through /proc/PID/fd/FD); its id, or None when no memfd can be made (then the
 * caller makes an ordinary block). */
static PyObject *
new_mapped_block(Py_ssize_t size)
{
    size_t len = size > 0 ? (size_t)size : 1;
    int fd = memfd_create("manygil-shared-buffer", MFD_CLOEXEC);
    if (fd < 0) {
        Py_RETURN_NONE;
    }
    if (ftruncate(fd, (off_t)len) < 0) {
        close(fd);
        Py_RETURN_NONE;
    }
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        close(fd);
        Py_RETURN_NONE;
    }
    entry *e = new_entry(KIND_BLOCK);
    if (e == NULL) {
        munmap(mem, len);
        close(fd);
        return PyErr_NoMemory();
    }
    e->mem = mem;
    e->size = size;
    e->fd = fd;
    return PyLong_FromLongLong(e->id);
}
#endif

/* block_fd(id) -> the memfd a block maps, or -1 when it has none. */
static PyObject *
block_fd(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    int fd = e->fd;
    release_entry(e);
    return PyLong_FromLong(fd);
}

static PyObject *
block_create(PyObject *mod, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "nbytes must be >= 0");
        return NULL;
    }
#if defined(__linux__)
    /* The memory comes page by page as it is first written, so a size the machine
     * cannot hold would succeed here and get the process killed later. */
    struct sysinfo si;
    if (size >= (1 << 30) && sysinfo(&si) == 0) {
        unsigned long long room = ((unsigned long long)si.totalram + si.totalswap) * si.mem_unit;
        if ((unsigned long long)size > room) {
            PyErr_Format(PyExc_MemoryError,
                         "cannot make a SharedBuffer of %zd bytes: it is more than this machine's "
                         "memory and swap (%llu bytes)", size, room);
            return NULL;
        }
    }
    PyObject *mapped = new_mapped_block(size);
    if (mapped != Py_None) {
        return mapped;   /* the id, or NULL with an exception set */
    }
    Py_DECREF(mapped);
#endif
    char *mem = PyMem_RawCalloc(size > 0 ? size : 1, 1);
    if (mem == NULL) {
        return PyErr_NoMemory();
    }
    return new_block(mem, size);
}

/* block_from(buffer) -> id: a new block holding a copy of a contiguous buffer (one
 * memcpy, without the GIL for large ones): how large bytes cross a payload. */
static PyObject *
block_from(PyObject *mod, PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    char *mem = PyMem_RawMalloc(buf.len > 0 ? buf.len : 1);
    if (mem == NULL) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    if (buf.len >= (1 << 20)) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(mem, buf.buf, buf.len);
        Py_END_ALLOW_THREADS
    }
    else {
        memcpy(mem, buf.buf, buf.len);
    }
    Py_ssize_t size = buf.len;
    PyBuffer_Release(&buf);
    count_copied(size);
    return new_block(mem, size);
}

/* block_borrow(bytes) -> id: a block on the bytes object's own memory, without a copy
 * (for the pool's own payloads).  The caller keeps the object alive and calls
 * block_disown(id) before it lets go of it.  So a large bytes crosses with one copy,
 * made by the interpreter that reads it, when it reads it in time. */
static PyObject *
block_borrow(PyObject *mod, PyObject *arg)
{
    if (!PyBytes_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "block_borrow() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    entry *e = new_entry(KIND_BLOCK);
    if (e == NULL) {
        return PyErr_NoMemory();
    }
    e->mem = PyBytes_AS_STRING(arg);
    e->size = PyBytes_GET_SIZE(arg);
    e->fd = -1;
    e->borrowed = 1;
    e->lent = 1;
    return PyLong_FromLongLong(e->id);
}

/* copied_into_blocks() -> the bytes copied into blocks (block_from(), and block_disown()
 * of a block still held) since the process started
 * (so that a test can tell a borrowed value from a copied one). */
static PyObject *
native_copied_into_blocks(PyObject *mod, PyObject *unused)
{
    pthread_mutex_lock(&reg_mu);
    int64_t n = copied_into_blocks;
    pthread_mutex_unlock(&reg_mu);
    return PyLong_FromLongLong(n);
}

/* block_disown(id): the owner of a borrowed block lets go of its memory, once the
 * copies in progress have ended.  When others still hold the id (a result not read
 * yet), the block first takes a copy of its own; else it is gone, and block_bytes()
 * of it fails.  Nothing for other blocks. */
static PyObject *
block_disown(PyObject *mod, PyObject *arg)
{
    entry *e = entry_from_arg(arg, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    int nomem = 0;
    if (e->borrowed) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&e->mu);
        while (e->readers > 0) {
            pthread_cond_wait(&e->cond, &e->mu);
        }
        if (e->lent == 1) {
            pthread_mutex_lock(&reg_mu);
            int64_t others = e->refs - 2;   /* not the owner's, not this call's */
            pthread_mutex_unlock(&reg_mu);
            char *copy = others > 0 ? PyMem_RawMalloc(e->size > 0 ? e->size : 1) : NULL;
            if (copy != NULL) {
                memcpy(copy, e->mem, e->size);
                e->mem = copy;
                e->lent = 0;
                count_copied(e->size);
            }
            else {
                nomem = others > 0;
                e->mem = NULL;
                e->lent = -1;
            }
        }
        pthread_mutex_unlock(&e->mu);
        Py_END_ALLOW_THREADS
    }
    release_entry(e);
    if (nomem) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

/* A borrowed block's memory is read only between these two (see block_borrow). */
static int
borrowed_read_begin(entry *e)
{
    if (!e->borrowed) {
        return 0;
    }
    pthread_mutex_lock(&e->mu);
    int gone = e->lent == -1;
    if (!gone) {
        e->readers++;
    }
    pthread_mutex_unlock(&e->mu);
    if (gone) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot load a large bytes value: its owner let go of it (the task "
                        "was abandoned or its result was no longer wanted)");
        return -1;
    }
    return 0;
}

static void
borrowed_read_end(entry *e)
{
    if (!e->borrowed) {
        return;
    }
    pthread_mutex_lock(&e->mu);
    if (--e->readers == 0) {
        pthread_cond_broadcast(&e->cond);
    }
    pthread_mutex_unlock(&e->mu);
}

/* block_bytes(id, bytearray=False) -> a bytes (or bytearray) copy of a block. */
static PyObject *
block_bytes(PyObject *mod, PyObject *args)
{
    long long id;
    int as_bytearray = 0;
    if (!PyArg_ParseTuple(args, "L|p:block_bytes", &id, &as_bytearray)) {
        return NULL;
    }
    entry *e = acquire_entry(id, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    if (borrowed_read_begin(e) < 0) {
        release_entry(e);
        return NULL;
    }
    PyObject *out = as_bytearray ? PyByteArray_FromStringAndSize(NULL, e->size)
                                 : PyBytes_FromStringAndSize(NULL, e->size);
    if (out != NULL) {
        char *dst = as_bytearray ? PyByteArray_AS_STRING(out) : PyBytes_AS_STRING(out);
        if (e->size >= (1 << 20)) {
            Py_BEGIN_ALLOW_THREADS
            memcpy(dst, e->mem, e->size);
            Py_END_ALLOW_THREADS
        }
        else {
            memcpy(dst, e->mem, e->size);
        }
    }
    borrowed_read_end(e);
    release_entry(e);
    return out;
}

typedef struct {
    PyObject_HEAD
    entry *e;             /* the Handle layout: handle_dealloc() frees it */
    int readonly;
    Py_ssize_t exports;   /* buffers handed out and not released yet */
} BlockView;

static int
blockview_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    BlockView *self = (BlockView *)op;
    static char *kwlist[] = {"id", "readonly", NULL};
    long long id;
    int readonly = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|p:BlockView", kwlist, &id, &readonly)) {
        return -1;
    }
    entry *e = acquire_entry(id, KIND_BLOCK);
    if (e == NULL) {
        return -1;
    }
    if (e->borrowed) {
        release_entry(e);
        PyErr_SetString(PyExc_ValueError, "a borrowed block has no view: use block_bytes()");
        return -1;
    }
    if (self->exports > 0) {
        release_entry(e);
        PyErr_SetString(PyExc_BufferError, "cannot re-initialise a BlockView that is in use");
        return -1;
    }
    if (self->e != NULL) {
        release_entry(self->e);
    }
    self->e = e;
    self->readonly = readonly;
    return 0;
}

static int
blockview_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    BlockView *self = (BlockView *)op;
    if (self->e == NULL) {
        PyErr_Format(PyExc_ValueError, "cannot use %s: it was released", Py_TYPE(op)->tp_name);
        return -1;
    }
    if (PyBuffer_FillInfo(view, op, self->e->mem, self->e->size, self->readonly, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
blockview_releasebuffer(PyObject *op, Py_buffer *view)
{
    ((BlockView *)op)->exports--;
}

static PyObject *
blockview_release(PyObject *op, PyObject *unused)
{
    BlockView *self = (BlockView *)op;
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot release %s: %zd memoryview(s) of it are still in use; "
                     "release them first (memoryview.release() or del)",
                     Py_TYPE(op)->tp_name, self->exports);
        return NULL;
    }
    if (self->e != NULL) {
        release_entry(self->e);
        self->e = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
blockview_get_nbytes(PyObject *op, void *closure)
{
    BlockView *self = (BlockView *)op;
    return PyLong_FromSsize_t(self->e ? self->e->size : 0);
}

static PyObject *
blockview_get_readonly(PyObject *op, void *closure)
{
    return PyBool_FromLong(((BlockView *)op)->readonly);
}

static PyObject *
blockview_get_released(PyObject *op, void *closure)
{
    return PyBool_FromLong(((BlockView *)op)->e == NULL);
}

static PyMethodDef blockview_methods[] = {
    {"release", blockview_release, METH_NOARGS,
     "Drop this handle's reference now (the memory is freed when no handle is left)."},
    {NULL},
};

static PyObject *
blockview_get_id(PyObject *op, void *closure)
{
    BlockView *self = (BlockView *)op;
    return PyLong_FromLongLong(self->e ? self->e->id : 0);
}

static PyGetSetDef blockview_getset[] = {
    {"id", blockview_get_id, NULL, "the registry id of the block", NULL},
    {"nbytes", blockview_get_nbytes, NULL, "the size of the block in bytes (0 once released)", NULL},
    {"readonly", blockview_get_readonly, NULL, "whether buffers of this handle are read-only", NULL},
    {"released", blockview_get_released, NULL, "whether this handle was released", NULL},
    {NULL},
};

static PyType_Slot blockview_slots[] = {
    {Py_tp_doc, "A view of a process-wide memory block; holds one reference to it."},
    {Py_tp_init, blockview_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_getset, blockview_getset},
    {Py_tp_methods, blockview_methods},
    {Py_bf_getbuffer, blockview_getbuffer},
    {Py_bf_releasebuffer, blockview_releasebuffer},
    {0, NULL},
};

static PyType_Spec blockview_spec = {
    .name = "manygil._native.BlockView",
    .basicsize = sizeof(BlockView),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = blockview_slots,
};

/* ------------------------------------------------------------------ threads */

/* set_async_exc(thread_id, exc_type) -> number of thread states changed.
 * Acts on the thread states of the CURRENT interpreter only, so it is called from a
 * helper thread inside the interpreter whose task is to be interrupted. */
static PyObject *
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
static PyObject *
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
static _Thread_local PyThreadState *home_tstate = NULL;
static _Thread_local PyObject *home_callback = NULL;
/* Homes nest (an interpreter called from inside a pool worker): push saves the
 * current one, pop restores it. */
#define HOME_DEPTH 16
static _Thread_local PyThreadState *home_tstates[HOME_DEPTH];
static _Thread_local PyObject *home_callbacks[HOME_DEPTH];
static _Thread_local int home_depth = 0;

static PyObject *
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

static PyObject *
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

static int
home_called(void *seen)
{
    return __atomic_load_n(&home_calls, __ATOMIC_ACQUIRE) != *(int64_t *)seen;
}

/* home_calls() -> how many call_home() calls have returned, process-wide. */
static PyObject *
native_home_calls(PyObject *mod, PyObject *unused)
{
    return PyLong_FromLongLong(__atomic_load_n(&home_calls, __ATOMIC_ACQUIRE));
}

/* await_home_call(seen, spin) -> bool: poll, without the GIL and for at most ``spin``
 * seconds, until a call_home() returns after home_calls() was ``seen``. */
static PyObject *
native_await_home_call(PyObject *mod, PyObject *args)
{
    long long seen;
    double spin;
    if (!PyArg_ParseTuple(args, "Ld:await_home_call", &seen, &spin)) {
        return NULL;
    }
    int64_t last = seen;
    return PyBool_FromLong(poll_briefly(home_called, &last, spin));
}

static PyObject *
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
    __atomic_add_fetch(&home_calls, 1, __ATOMIC_RELEASE);  /* after the home GIL is free */
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
 * such interpreters; a pthread_atfork child handler, which runs inside fork() before
 * anything of CPython's, ends such a child at once, saying why; the "after_in_parent"
 * hook clears it.  Process-global; set and cleared by the forking thread.
 */
static volatile sig_atomic_t fork_guard = 0;
static pthread_once_t fork_guard_once = PTHREAD_ONCE_INIT;

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
    ssize_t unused = write(2, msg, sizeof(msg) - 1);
    (void)unused;
    _exit(1);
}

static void
fork_guard_install(void)
{
    (void)pthread_atfork(NULL, NULL, fork_guard_child);
}

static PyObject *
native_set_fork_guard(PyObject *mod, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    fork_guard = on;
    Py_RETURN_NONE;
}

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
    (void)pthread_once(&fork_guard_once, fork_guard_install);
    PyInterpreterState *interp = PyInterpreterState_Get();
    void *id = (void *)(intptr_t)PyInterpreterState_GetID(interp);
    /* Where that fails (3.12 holds 32 such callbacks), the items stay: no error. */
#if PY_VERSION_HEX >= 0x030D0000
    if (PyUnstable_AtExit(interp, unbind_interpreter, id) < 0) {
#else
    if (_Py_AtExit(interp, unbind_interpreter, id) < 0) {
#endif
        PyErr_Clear();
    }
    PyObject *tp = PyType_FromModuleAndSpec(mod, &blockview_spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    if (PyModule_AddObject(mod, "BlockView", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    tp = PyType_FromModuleAndSpec(mod, &syncobj_spec, NULL);
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
