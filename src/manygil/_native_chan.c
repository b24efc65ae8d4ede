/*
 * manygil._native, channels: a FIFO of byte strings with an optional maxsize
 * (interpreters.Queue, the pool's inboxes).  An item carries the registry references
 * of the objects pickled in it (its pins) and what becomes of it once the interpreter
 * that put it is closed (3.14's unbounditems).
 *
 * Process-global state owned here: none of its own; each channel entry's queue
 * (head, tail, count, and every item's state) is guarded by that entry's mutex, and its
 * two semaphores count the items and the free places.  mg_unbind_interpreter() visits
 * every channel: it holds one channel's mutex at a time, never reg_mu with it.
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

/* chan_create(maxsize, unbound=0) -> id; ``unbound``: see item (0: items are kept). */
PyObject *
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
    entry *e = mg_new_entry(KIND_CHAN);
    if (e == NULL) {
        return PyErr_NoMemory();
    }
    e->unbound = unbound;
    e->limit = maxsize;   /* as given (chan_info reports it, as 3.14's Queue.maxsize does) */
    e->maxsize = maxsize > 0 ? maxsize : 0;
    mg_sem_init(&e->items, 0);
    mg_sem_init(&e->space, e->maxsize > 0 && e->maxsize < MG_SEM_VALUE_MAX ? (unsigned)e->maxsize : 0);
    if (e->maxsize >= MG_SEM_VALUE_MAX) {
        e->maxsize = 0;
    }
    e->has_sems = 1;
    return PyLong_FromLongLong(e->id);
}

/* chan_put(id, data, tag, timeout, pins=(), unbound=-1) -> bool (False: still full at
 * the deadline).  pins: ids whose references the caller hands over to the item (see
 * item); unbound: what becomes of it once this interpreter is closed (-1: the
 * channel's default). */
PyObject *
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
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
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
    entry *e = mg_acquire_entry(id, KIND_CHAN);
    if (e == NULL) {
        PyMem_RawFree(it);   /* the caller still owns the pins */
        return NULL;
    }
    it->unbound = unbound >= 0 ? unbound : e->unbound;
    if (e->maxsize > 0) {
        int rc = mg_sem_take(&e->space, timeout);
        if (rc != 1) {
            mg_release_entry(e);
            PyMem_RawFree(it);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_FALSE;
        }
    }
    it->npins = npins;   /* from here on the item owns them */
    mg_mutex_lock(&e->mu);
    if (e->tail == NULL) {
        e->head = e->tail = it;
    }
    else {
        e->tail->next = it;
        e->tail = it;
    }
    e->count++;
    mg_mutex_unlock(&e->mu);
    mg_sem_post(&e->items);
    mg_release_entry(e);
    Py_RETURN_TRUE;
}

/* chan_get(id, timeout, spin=0) -> (tag, bytes, pins) or None at the deadline; the
 * caller owns the pins (a tuple of ids) and releases them once it has loaded the bytes.
 * ``spin``: seconds to poll (without the GIL) before sleeping. */
PyObject *
chan_get(PyObject *mod, PyObject *args)
{
    long long id;
    PyObject *timeout_obj;
    double timeout, spin = 0;
    if (!PyArg_ParseTuple(args, "LO|d:chan_get", &id, &timeout_obj, &spin)) {
        return NULL;
    }
    if (mg_parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_CHAN);
    if (e == NULL) {
        return NULL;
    }
    item *it;
    for (;;) {
        int rc = mg_sem_take_spinning(&e->items, timeout, spin);
        if (rc != 1) {
            mg_release_entry(e);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        mg_mutex_lock(&e->mu);
        it = e->head;
        e->head = it->next;
        if (e->head == NULL) {
            e->tail = NULL;
        }
        if (it->state != ST_REMOVED) {
            e->count--;      /* a removed one was counted off when it was removed */
        }
        mg_mutex_unlock(&e->mu);
        if (e->maxsize > 0) {
            mg_sem_post(&e->space);
        }
        if (it->state != ST_REMOVED) {
            break;
        }
        mg_free_item(it);       /* removed while this get waited for it: the next one */
    }
    mg_release_entry(e);
    if (it->state == ST_UNBOUND) {
        /* Its interpreter was closed: (-unbound, b"", ()) says what to return instead. */
        int unbound = it->unbound;
        mg_free_item(it);
        return Py_BuildValue("(iy#())", -unbound, "", (Py_ssize_t)0);
    }
    PyObject *data = PyBytes_FromStringAndSize(it->data, it->len);
    PyObject *pins = PyTuple_New(it->npins);
    if (data == NULL || pins == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(pins);
        mg_free_item(it);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < it->npins; i++) {
        PyObject *pin = PyLong_FromLongLong(it->pins[i]);
        if (pin == NULL) {
            Py_DECREF(data);
            Py_DECREF(pins);
            mg_free_item(it);
            return NULL;
        }
        PyTuple_SET_ITEM(pins, i, pin);
    }
    int tag = it->tag;
    PyMem_RawFree(it);   /* the pins now belong to the caller */
    return Py_BuildValue("(iNN)", tag, data, pins);
}

PyObject *
chan_info(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, KIND_CHAN);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&e->mu);
    Py_ssize_t count = e->count, maxsize = (Py_ssize_t)e->limit;
    int unbound = e->unbound;
    mg_mutex_unlock(&e->mu);
    mg_release_entry(e);
    return Py_BuildValue("(nni)", count, maxsize, unbound);
}

/*
 * An interpreter that imported this module is being closed (its atexit): the items it
 * put in a queue become unbound, as the queue's (or the put's) unbounditems says, as
 * CPython 3.14's queues do.  UNB_REMOVE items leave the queue: unlinked now when no
 * get() waits for them, else marked so that the get() that takes them skips them.
 */
void
mg_unbind_interpreter(void *data)
{
    int64_t interp = (int64_t)(intptr_t)data;
    Py_ssize_t found;
    entry **chans = mg_entries_of_kind(KIND_CHAN, &found);
    for (Py_ssize_t i = 0; i < found; i++) {
        entry *e = chans[i];
        item *gone = NULL;   /* unlinked here: freed once the mutex is released */
        int freed = 0;
        mg_mutex_lock(&e->mu);
        item *prev = NULL, *it = e->head;
        while (it != NULL) {
            item *next = it->next;
            if (it->interp == interp && it->unbound != UNB_KEEP && it->state == ST_LIVE) {
                if (it->unbound != UNB_REMOVE) {
                    it->state = ST_UNBOUND;
                }
                else if (mg_sem_trywait(&e->items)) {
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
        mg_mutex_unlock(&e->mu);
        while (gone != NULL) {
            item *next = gone->next;
            mg_free_item(gone);
            gone = next;
        }
        for (int k = 0; k < freed && e->maxsize > 0; k++) {
            mg_sem_post(&e->space);
        }
        mg_release_entry(e);
    }
    PyMem_RawFree(chans);
}

