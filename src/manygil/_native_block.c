/*
 * manygil._native, blocks: process-wide memory (shared.SharedBuffer/SharedArray, large
 * bytes crossing a payload) and the BlockView type that exposes one as a buffer.
 *
 * Process-global state owned here: none of its own (the bytes copied count lives with
 * the registry, under reg_mu).  A block's mem and size are fixed once made, except a
 * borrowed block's mem, lent and readers, which are guarded by the entry's mutex;
 * block_disown() takes reg_mu (to read the refcount) while it holds that mutex.
 */
#define PY_SSIZE_T_CLEAN
#include "_native.h"

/* Blocks without a memfd from this size on are whole pages of their own. */
#define PAGED_MIN (1 << 20)

/* ------------------------------------------------------------------ blocks */

/* A BLOCK entry that takes over mem (freed with it); its id, or NULL (mem freed). */
static PyObject *
new_block(char *mem, Py_ssize_t size)
{
    entry *e = mg_new_entry(KIND_BLOCK);
    if (e == NULL) {
        PyMem_RawFree(mem);
        return PyErr_NoMemory();
    }
    e->mem = mem;
    e->size = size;
    e->fd = -1;
    return PyLong_FromLongLong(e->id);
}

/* A zeroed block in memory that a process worker can map too (a memfd on Linux,
 * through /proc/PID/fd/FD); its id, or None when no such memory can be made, always so
 * on macOS and Windows (then the caller makes an ordinary block). */
static PyObject *
new_mapped_block(Py_ssize_t size)
{
    void *mem;
    int fd;
    if (mg_shm_create((size_t)size, &mem, &fd) < 0) {
        Py_RETURN_NONE;
    }
    entry *e = mg_new_entry(KIND_BLOCK);
    if (e == NULL) {
        mg_shm_free(mem, (size_t)size, fd);
        return PyErr_NoMemory();
    }
    e->mem = mem;
    e->size = size;
    e->fd = fd;
    return PyLong_FromLongLong(e->id);
}

/* block_fd(id) -> the memfd a block maps, or -1 when it has none. */
PyObject *
block_fd(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    int fd = e->fd;
    mg_release_entry(e);
    return PyLong_FromLong(fd);
}

PyObject *
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
    /* The memory comes page by page as it is first written, so a size the machine
     * cannot hold would succeed here and get the process killed later. */
    uint64_t room;
    if (size >= (1 << 30) && (room = mg_memory_and_swap()) != 0 && (uint64_t)size > room) {
        PyErr_Format(PyExc_MemoryError,
                     "cannot make a SharedBuffer of %zd bytes: it is more than this machine's "
                     "memory and swap (%llu bytes)", size, (unsigned long long)room);
        return NULL;
    }
    PyObject *mapped = new_mapped_block(size);
    if (mapped != Py_None) {
        return mapped;   /* the id, or NULL with an exception set */
    }
    Py_DECREF(mapped);
    if (size >= PAGED_MIN) {
        /* whole pages, zeroed by the OS as they are first touched */
        char *pages = mg_pages_alloc((size_t)size);
        if (pages == NULL) {
            return PyErr_NoMemory();
        }
        entry *e = mg_new_entry(KIND_BLOCK);
        if (e == NULL) {
            mg_pages_free(pages, (size_t)size);
            return PyErr_NoMemory();
        }
        e->mem = pages;
        e->size = size;
        e->fd = -1;
        e->paged = 1;
        return PyLong_FromLongLong(e->id);
    }
    char *mem = PyMem_RawCalloc(size > 0 ? size : 1, 1);
    if (mem == NULL) {
        return PyErr_NoMemory();
    }
    return new_block(mem, size);
}

/* block_from(buffer) -> id: a new block holding a copy of a contiguous buffer (one
 * memcpy, without the GIL for large ones): how large bytes cross a payload. */
PyObject *
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
    mg_count_copied(size);
    return new_block(mem, size);
}

/* block_borrow(bytes) -> id: a block on the bytes object's own memory, without a copy
 * (for the pool's own payloads).  The caller keeps the object alive and calls
 * block_disown(id) before it lets go of it.  So a large bytes crosses with one copy,
 * made by the interpreter that reads it, when it reads it in time. */
PyObject *
block_borrow(PyObject *mod, PyObject *arg)
{
    if (!PyBytes_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "block_borrow() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    entry *e = mg_new_entry(KIND_BLOCK);
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

/* block_disown(id): the owner of a borrowed block lets go of its memory, once the
 * copies in progress have ended.  When others still hold the id (a result not read
 * yet), the block first takes a copy of its own; else it is gone, and block_bytes()
 * of it fails.  Nothing for other blocks. */
PyObject *
block_disown(PyObject *mod, PyObject *arg)
{
    entry *e = mg_entry_from_arg(arg, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    int nomem = 0;
    if (e->borrowed) {
        Py_BEGIN_ALLOW_THREADS
        mg_mutex_lock(&e->mu);
        while (e->readers > 0) {
            mg_cond_wait(&e->cond, &e->mu);
        }
        if (e->lent == 1) {
            int64_t others = mg_entry_refs(e) - 2;   /* not the owner's, not this call's */
            char *copy = others > 0 ? PyMem_RawMalloc(e->size > 0 ? e->size : 1) : NULL;
            if (copy != NULL) {
                memcpy(copy, e->mem, e->size);
                e->mem = copy;
                e->lent = 0;
                mg_count_copied(e->size);
            }
            else {
                nomem = others > 0;
                e->mem = NULL;
                e->lent = -1;
            }
        }
        mg_mutex_unlock(&e->mu);
        Py_END_ALLOW_THREADS
    }
    mg_release_entry(e);
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
    mg_mutex_lock(&e->mu);
    int gone = e->lent == -1;
    if (!gone) {
        e->readers++;
    }
    mg_mutex_unlock(&e->mu);
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
    mg_mutex_lock(&e->mu);
    if (--e->readers == 0) {
        mg_cond_broadcast(&e->cond);
    }
    mg_mutex_unlock(&e->mu);
}

/* block_bytes(id, bytearray=False) -> a bytes (or bytearray) copy of a block. */
PyObject *
block_bytes(PyObject *mod, PyObject *args)
{
    long long id;
    int as_bytearray = 0;
    if (!PyArg_ParseTuple(args, "L|p:block_bytes", &id, &as_bytearray)) {
        return NULL;
    }
    entry *e = mg_acquire_entry(id, KIND_BLOCK);
    if (e == NULL) {
        return NULL;
    }
    if (borrowed_read_begin(e) < 0) {
        mg_release_entry(e);
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
    mg_release_entry(e);
    return out;
}

typedef struct {
    PyObject_HEAD
    entry *e;             /* the Handle layout: mg_handle_dealloc() frees it */
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
    entry *e = mg_acquire_entry(id, KIND_BLOCK);
    if (e == NULL) {
        return -1;
    }
    if (e->borrowed) {
        mg_release_entry(e);
        PyErr_SetString(PyExc_ValueError, "a borrowed block has no view: use block_bytes()");
        return -1;
    }
    if (self->exports > 0) {
        mg_release_entry(e);
        PyErr_SetString(PyExc_BufferError, "cannot re-initialise a BlockView that is in use");
        return -1;
    }
    if (self->e != NULL) {
        mg_release_entry(self->e);
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
        mg_release_entry(self->e);
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
    {Py_tp_dealloc, mg_handle_dealloc},
    {Py_tp_getset, blockview_getset},
    {Py_tp_methods, blockview_methods},
    {Py_bf_getbuffer, blockview_getbuffer},
    {Py_bf_releasebuffer, blockview_releasebuffer},
    {0, NULL},
};

PyType_Spec mg_blockview_spec = {
    .name = "manygil._native.BlockView",
    .basicsize = sizeof(BlockView),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = blockview_slots,
};

