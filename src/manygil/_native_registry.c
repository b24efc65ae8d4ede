/*
 * manygil._native, the registry: every process-wide object (channel, block, sync
 * value) is an entry named by an int64 id, shareable between interpreters as is, and
 * reference counted across them; it is freed when the last reference, in any
 * interpreter, is released.
 *
 * Process-global state owned here, all guarded by reg_mu:
 *   registry[]          the hash table of live entries by id (entry.next chains a bucket)
 *   entry.refs          every entry's reference count
 *   next_id             the next id handed out (ids are never reused)
 *   live[kind]          live entries by kind (live())
 *   copied_into_blocks  bytes copied into blocks, ever (copied_into_blocks())
 * reg_mu is a leaf lock: nothing else is taken while it is held, and it may be taken
 * while an entry's own mutex is held (block_disown).  An entry's other fields are its
 * kind's (see _native_chan.c, _native_block.c, _native_sync.c).
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

static mg_mutex reg_mu = MG_MUTEX_INIT;
#define BUCKETS 4096   /* the registry: a hash table of entries by id */
static entry *registry[BUCKETS];
#define BUCKET(id) (&registry[(uint64_t)(id) & (BUCKETS - 1)])
static int64_t next_id = 1;
static int64_t live[4] = {0, 0, 0, 0};
static int64_t copied_into_blocks = 0;   /* bytes copied into blocks, ever (under reg_mu) */

void
mg_count_copied(Py_ssize_t size)
{
    mg_mutex_lock(&reg_mu);
    copied_into_blocks += size;
    mg_mutex_unlock(&reg_mu);
}


entry *
mg_new_entry(int kind)
{
    entry *e = PyMem_RawCalloc(1, sizeof(entry));
    if (e == NULL) {
        return NULL;
    }
    e->kind = kind;
    e->refs = 1;
    mg_mutex_init(&e->mu);
    mg_cond_init(&e->cond);
    mg_cond_init(&e->cond2);
    mg_mutex_lock(&reg_mu);
    e->id = next_id++;
    e->next = *BUCKET(e->id);
    *BUCKET(e->id) = e;
    live[kind]++;
    mg_mutex_unlock(&reg_mu);
    return e;
}

void
mg_free_item(item *it)
{
    for (Py_ssize_t i = 0; i < it->npins; i++) {
        mg_release_id(it->pins[i]);
    }
    PyMem_RawFree(it);   /* the item, its pins and its bytes are one allocation */
}

static void
free_entry(entry *e)
{
    item *it = e->head;
    while (it != NULL) {
        item *next = it->next;
        mg_free_item(it);       /* never taken: its pins go with it */
        it = next;
    }
    if (e->mem != NULL && !(e->borrowed && e->lent != 0)) {
        if (e->fd >= 0) {
            mg_shm_free(e->mem, (size_t)e->size, e->fd);
        }
        else if (e->paged) {
            mg_pages_free(e->mem, (size_t)e->size);
        }
        else {
            PyMem_RawFree(e->mem);
        }
    }
    if (e->has_sems) {
        mg_sem_destroy(&e->items);
        mg_sem_destroy(&e->space);
    }
    mg_cond_destroy(&e->cond);
    mg_cond_destroy(&e->cond2);
    mg_mutex_destroy(&e->mu);
    PyMem_RawFree(e);
}

/* Find an entry and take a reference for the duration of an operation. */
entry *
mg_acquire_entry(int64_t id, int kind)
{
    mg_mutex_lock(&reg_mu);
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
    mg_mutex_unlock(&reg_mu);
    if (e == NULL) {
        PyErr_Format(PyExc_LookupError, "no live manygil object with id %lld", (long long)id);
    }
    return e;
}

/* mg_acquire_entry() for a METH_O function whose argument is the id */
entry *
mg_entry_from_arg(PyObject *arg, int kind)
{
    int64_t id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return mg_acquire_entry(id, kind);
}

/* One more reference to an entry that the caller already holds one to. */
void
mg_retain_entry(entry *e)
{
    mg_mutex_lock(&reg_mu);
    e->refs++;
    mg_mutex_unlock(&reg_mu);
}

void
mg_release_entry(entry *e)
{
    int dead = 0;
    mg_mutex_lock(&reg_mu);
    if (--e->refs == 0) {
        entry **p = BUCKET(e->id);
        while (*p != e) {
            p = &(*p)->next;
        }
        *p = e->next;
        live[e->kind]--;
        dead = 1;
    }
    mg_mutex_unlock(&reg_mu);
    if (dead) {
        free_entry(e);
    }
}

/* Drop one reference to an id, if it is still live (no exception either way). */
void
mg_release_id(int64_t id)
{
    mg_mutex_lock(&reg_mu);
    entry *e = *BUCKET(id);
    while (e != NULL && e->id != id) {
        e = e->next;
    }
    mg_mutex_unlock(&reg_mu);
    if (e != NULL) {
        mg_release_entry(e);
    }
}


/* ------------------------------------------------------------------ generic */

PyObject *
native_retain(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, 0);  /* the reference taken here is kept */
    if (e == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
native_release(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, 0);
    if (e == NULL) {
        return NULL;
    }
    mg_mutex_lock(&reg_mu);
    e->refs--;                        /* the caller's reference */
    mg_mutex_unlock(&reg_mu);
    mg_release_entry(e);                 /* ours; frees at zero */
    Py_RETURN_NONE;
}

PyObject *
native_refcount(PyObject *mod, PyObject *arg)
{
    int64_t id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int64_t refs = 0;
    mg_mutex_lock(&reg_mu);
    for (entry *e = *BUCKET(id); e != NULL; e = e->next) {
        if (e->id == id) {
            refs = e->refs;
            break;
        }
    }
    mg_mutex_unlock(&reg_mu);
    return PyLong_FromLongLong(refs);
}

PyObject *
native_live(PyObject *mod, PyObject *unused)
{
    int64_t c, b, s;
    mg_mutex_lock(&reg_mu);
    c = live[KIND_CHAN];
    b = live[KIND_BLOCK];
    s = live[KIND_SYNC];
    mg_mutex_unlock(&reg_mu);
    return Py_BuildValue("{s:L,s:L,s:L}", "channels", (long long)c, "blocks",
                         (long long)b, "syncs", (long long)s);
}


/* The references held on an entry now (block_disown: are there others than ours?) */
int64_t
mg_entry_refs(entry *e)
{
    mg_mutex_lock(&reg_mu);
    int64_t refs = e->refs;
    mg_mutex_unlock(&reg_mu);
    return refs;
}

/* Every live entry of a kind, each with a reference taken for the caller (who drops
 * them with mg_release_entry and frees the array with PyMem_RawFree); *n: how many. */
entry **
mg_entries_of_kind(int kind, Py_ssize_t *n)
{
    mg_mutex_lock(&reg_mu);
    Py_ssize_t want = live[kind], found = 0;
    entry **all = want > 0 ? PyMem_RawMalloc((size_t)want * sizeof(entry *)) : NULL;
    for (int b = 0; all != NULL && b < BUCKETS; b++) {
        for (entry *e = registry[b]; e != NULL && found < want; e = e->next) {
            if (e->kind == kind) {
                e->refs++;
                all[found++] = e;
            }
        }
    }
    mg_mutex_unlock(&reg_mu);
    *n = found;
    return all;
}

/* copied_into_blocks() -> the bytes copied into blocks (block_from(), and block_disown()
 * of a block still held) since the process started
 * (so that a test can tell a borrowed value from a copied one). */
PyObject *
native_copied_into_blocks(PyObject *mod, PyObject *unused)
{
    mg_mutex_lock(&reg_mu);
    int64_t n = copied_into_blocks;
    mg_mutex_unlock(&reg_mu);
    return PyLong_FromLongLong(n);
}

/* ------------------------------------------------------------------ handles */

/* tp_dealloc of every handle type: drop the entry's reference, then the object. */
void
mg_handle_dealloc(PyObject *op)
{
    Handle *self = (Handle *)op;
    PyTypeObject *tp = Py_TYPE(op);
    if (self->e != NULL) {
        mg_release_entry(self->e);
        self->e = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

