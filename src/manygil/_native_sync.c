/*
 * manygil._native, sync values: two int64 counters and a flag (value, aux, limit,
 * broken) behind sync.Lock/RLock/Semaphore/Event/Condition/Barrier and
 * shared.SharedValue, with the functions that act on them by id, and the Sync type: a
 * handle that keeps its entry's pointer so that acquire()/release() skip the registry.
 *
 * Process-global state owned here: none of its own; each sync entry's fields are
 * guarded by that entry's mutex, and waiters sleep on its condition variable.
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

/* ------------------------------------------------------------------ sync */

PyObject *
sync_create(PyObject *mod, PyObject *args)
{
    long long value, limit;
    if (!PyArg_ParseTuple(args, "LL:sync_create", &value, &limit)) {
        return NULL;
    }
    entry *e = mg_new_entry(KIND_SYNC);
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

static mg_cond *
sync_take(entry *e, void *arg)
{
    e->value--;
    return NULL;
}

/* acquire(id, timeout) -> bool: wait until value > 0, then decrement it */
PyObject *
sync_acquire(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:sync_acquire", &id, &timeout_obj)) {
        return NULL;
    }
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = mg_block_until(e, &e->cond, sync_positive, sync_take, NULL, timeout);
    mg_release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* release(id, n) -> bool: add n to value; False (and no change) if limit would pass,
 * OverflowError (and no change) if 64 bits would */
PyObject *
sync_release(PyObject *mod, PyObject *args)
{
    long long id, n;
    if (!PyArg_ParseTuple(args, "LL:sync_release", &id, &n)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int ok = 1;
    int64_t sum;
    mg_mutex_lock(&e->mu);
    if (mg_add_overflow_i64(e->value, n, &sum)) {
        ok = e->limit >= 0 ? 0 : -1;   /* past any limit; else past 64 bits */
    }
    else if (e->limit >= 0 && sum > e->limit) {
        ok = 0;
    }
    else {
        e->value = sum;
        if (n == 1) {
            mg_cond_signal(&e->cond);
        }
        else {
            mg_cond_broadcast(&e->cond);
        }
    }
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    if (ok < 0) {
        return PyErr_Format(PyExc_OverflowError, "the count would pass 2**63 - 1");
    }
    return PyBool_FromLong(ok);
}

/* add(id, delta) -> new value (atomic), wakes waiters; OverflowError (and no change)
 * when the value would leave the 64-bit range */
PyObject *
sync_add(PyObject *mod, PyObject *args)
{
    long long id, delta;
    if (!PyArg_ParseTuple(args, "LL:sync_add", &id, &delta)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    int64_t v;
    int overflow = mg_add_overflow_i64(e->value, delta, &v);
    if (!overflow) {
        e->value = v;
        mg_cond_broadcast(&e->cond);
    }
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    if (overflow) {
        return PyErr_Format(PyExc_OverflowError, "the value would leave the range [-2**63, 2**63 - 1]");
    }
    return PyLong_FromLongLong(v);
}

/* set(id, value): store a value, wake waiters */
PyObject *
sync_set(PyObject *mod, PyObject *args)
{
    long long id, value;
    if (!PyArg_ParseTuple(args, "LL:sync_set", &id, &value)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    e->value = value;
    mg_cond_broadcast(&e->cond);
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    Py_RETURN_NONE;
}

/* cas(id, expected, new) -> bool */
PyObject *
sync_cas(PyObject *mod, PyObject *args)
{
    long long id, expected, value;
    if (!PyArg_ParseTuple(args, "LLL:sync_cas", &id, &expected, &value)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int ok = 0;
    mg_mutex_lock(&e->mu);
    if (e->value == expected) {
        e->value = value;
        ok = 1;
        mg_cond_broadcast(&e->cond);
    }
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    return PyBool_FromLong(ok);
}

/* get(id) -> (value, aux, broken) */
PyObject *
sync_get(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    int64_t v = e->value, a = e->aux;
    int b = e->broken;
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    return Py_BuildValue("(LLi)", (long long)v, (long long)a, b);
}

static int
sync_nonzero(entry *e, void *arg)
{
    return e->value != 0;
}

static mg_cond *
nothing(entry *e, void *arg)
{
    return NULL;
}

/* wait_nonzero(id, timeout) -> bool (Event.wait) */
PyObject *
sync_wait_nonzero(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:sync_wait_nonzero", &id, &timeout_obj)) {
        return NULL;
    }
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = mg_block_until(e, &e->cond, sync_nonzero, nothing, NULL, timeout);
    mg_release_entry(e);
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
PyObject *
cond_enter(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    e->aux++;
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    Py_RETURN_NONE;
}

static mg_cond *
cond_take(entry *e, void *arg)
{
    e->value--;
    e->aux--;
    return NULL;
}

PyObject *
cond_wait(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LO:cond_wait", &id, &timeout_obj)) {
        return NULL;
    }
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    int rc = mg_block_until(e, &e->cond, sync_positive, cond_take, NULL, timeout);
    if (rc != 1) {
        mg_mutex_lock(&e->mu);
        if (e->value > 0) {       /* notified right at the deadline: take it */
            cond_take(e, NULL);
            rc = rc < 0 ? rc : 1;
        }
        else {
            e->aux--;
        }
        mg_mutex_unlock(&e->mu);
    }
    mg_release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* cond_notify(id, n) -> how many waiters were woken */
PyObject *
cond_notify(PyObject *mod, PyObject *args)
{
    long long id, n;
    if (!PyArg_ParseTuple(args, "LL:cond_notify", &id, &n)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    int64_t unwoken = e->aux - e->value;
    if (n < 0 || n > unwoken) {
        n = unwoken;
    }
    if (n > 0) {
        e->value += n;
        mg_cond_broadcast(&e->cond);
    }
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
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
PyObject *
barrier_wait(PyObject *mod, PyObject *args)
{
    long long id, parties;
    PyObject *timeout_obj;
    double timeout;
    if (!PyArg_ParseTuple(args, "LLO:barrier_wait", &id, &parties, &timeout_obj)) {
        return NULL;
    }
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    barrier_arg ba;
    int64_t index;
    mg_mutex_lock(&e->mu);
    if (e->broken) {
        mg_mutex_unlock(&e->mu);
        mg_release_entry(e);
        return PyLong_FromLong(-1);
    }
    ba.generation = e->aux;
    ba.epoch = e->limit;
    index = e->value++;
    if (e->value == parties) {
        e->value = 0;
        e->aux++;
        mg_cond_broadcast(&e->cond);
        mg_mutex_unlock(&e->mu);
        mg_release_entry(e);
        return PyLong_FromLongLong(parties - 1 - index);
    }
    mg_mutex_unlock(&e->mu);
    int rc = mg_block_until(e, &e->cond, barrier_done, nothing, &ba, timeout);
    mg_mutex_lock(&e->mu);
    int ok = rc == 1 && !e->broken && e->aux != ba.generation && e->limit == ba.epoch;
    if (!ok && e->aux == ba.generation && e->limit == ba.epoch) {
        e->value--;               /* it leaves without the barrier opening */
        if (!e->broken) {
            e->broken = 1;        /* a timeout or an interrupt breaks the barrier */
            mg_cond_broadcast(&e->cond);
        }
    }
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    if (rc < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(ok ? parties - 1 - index : -1);
}

/* barrier_set(id, broken): abort (1) or reset (0) */
PyObject *
barrier_set(PyObject *mod, PyObject *args)
{
    long long id;
    int broken;
    if (!PyArg_ParseTuple(args, "Lp:barrier_set", &id, &broken)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    if (broken) {
        e->broken = 1;
    }
    else {
        /* a new epoch: waiters of the old one see the barrier as broken */
        e->limit++;
        e->value = 0;
        e->broken = 0;
    }
    mg_cond_broadcast(&e->cond);
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Sync objects */

/*
 * Sync: a handle that holds one reference to a SYNC entry and keeps its pointer, so
 * that acquire()/release() skip the registry: an uncontended acquire+release is two
 * mutex operations and two C calls.  manygil.sync.Lock and Semaphore subclass it.
 */
typedef Handle Sync;

static int
sync_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    long long id;
    if (!PyArg_ParseTuple(args, "L:Sync", &id)) {
        return -1;
    }
    entry *e = mg_acquire_entry(id, KIND_SYNC);
    if (e == NULL) {
        return -1;
    }
    Sync *self = (Sync *)op;
    if (self->e != NULL) {
        mg_release_entry(self->e);
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
        if (mg_seconds_of(timeout_obj, &timeout) < 0) {
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
    mg_mutex_lock(&e->mu);
    if (e->value > 0) {
        e->value--;
        mg_mutex_unlock(&e->mu);
        Py_RETURN_TRUE;
    }
    mg_mutex_unlock(&e->mu);
    /* The wait holds a reference of its own: without the GIL, the handle may let go of
     * its entry meanwhile (__init__ called again). */
    mg_retain_entry(e);
    int rc = mg_block_until(e, &e->cond, sync_positive, sync_take, NULL, timeout);
    mg_release_entry(e);
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
    mg_mutex_lock(&e->mu);
    if (e->limit >= 0 && e->value >= e->limit) {
        ok = 0;
    }
    else if (e->value == INT64_MAX) {
        ok = -1;
    }
    else {
        e->value++;
    }
    mg_mutex_unlock(&e->mu);
    if (ok == 0) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    if (ok < 0) {
        PyErr_Format(PyExc_OverflowError, "cannot release this %s: its count would pass 2**63 - 1",
                     Py_TYPE(op)->tp_name);
        return NULL;
    }
    mg_cond_signal(&e->cond);
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
    mg_mutex_lock(&e->mu);
    int64_t v = e->value;
    mg_mutex_unlock(&e->mu);
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
    {Py_tp_dealloc, mg_handle_dealloc},
    {Py_tp_methods, syncobj_methods},
    {Py_tp_getset, syncobj_getset},
    {0, NULL},
};

PyType_Spec mg_syncobj_spec = {
    .name = "manygil._native.Sync",
    .basicsize = sizeof(Sync),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = syncobj_slots,
};

