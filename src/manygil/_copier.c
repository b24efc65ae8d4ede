/*
 * The structural copier: a tree of built-in objects, written by the sending interpreter
 * as compact records and rebuilt by the receiving one through the C API, with no pickle
 * and no Python-level call on either side for the built-in part.
 *
 *   sender (copy_dumps)                         receiver (copy_loads)
 *   walk the tree (iterative, GIL held, no  ──► header, records ──► rebuild the exact
 *   Python code runs: a consistent snapshot)    leaves' pickle      types (iterative)
 *
 * Exact built-in types are copied: None, bool, int (any size), float, complex, str,
 * bytes, bytearray, tuple, list, dict, set, frozenset.  Anything else (a subclass, a
 * function, an instance of a user's class) is a leaf: the leaves of a value are pickled
 * together, once, by the caller's ``leaf_dumper`` after the walk, and unpickled by the
 * receiver before the tree is rebuilt.
 *
 * Shared references and cycles: an object whose reference count is above one may be
 * reached twice, so it is remembered (the memo) and written as a reference the second
 * time; an object referenced once cannot be met again.  A reference back into a tuple
 * or frozenset that is still being written (a cycle through it) cannot be rebuilt in
 * one pass: copy_dumps returns None and the caller pickles the whole value.  So does it
 * when the leaves' pickle reaches an object of the tree (``leaf_dumper`` says so).
 *
 * Format (native byte order: the same process reads what it wrote):
 *   header  [u8 MAG_COPY_MAGIC][u8 version][u32 memo count][u32 leaf count][u64 leaves at]
 *   record  [u8 tag | MEMO_PUT][payload]; lengths and indices are LEB128 varints
 *   leaves  at "leaves at" (0: none), to the end: the leaf_dumper's bytes
 *
 * Process-global state: none.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_copier.h"

#define COPY_VERSION 1
#define HEADER_SIZE 18
#define MEMO_PUT 0x80

enum {
    T_NONE = 1, T_TRUE, T_FALSE, T_I8, T_I32, T_I64, T_BIGINT, T_FLOAT, T_COMPLEX,
    T_STR1, T_STR2, T_STR4, T_BYTES, T_BYTEARRAY,
    T_LIST, T_TUPLE, T_DICT, T_SET, T_FROZENSET,
    T_REF, T_LEAF,
};

/* ------------------------------------------------------------------ writing */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} wbuf;

static int
w_grow(wbuf *w, Py_ssize_t need)
{
    Py_ssize_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *buf = PyMem_Realloc(w->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->buf = buf;
    w->cap = cap;
    return 0;
}

static inline int
w_reserve(wbuf *w, Py_ssize_t need)
{
    return w->len + need <= w->cap ? 0 : w_grow(w, need);
}

static inline int
w_u8(wbuf *w, int v)
{
    if (w_reserve(w, 1) < 0) {
        return -1;
    }
    w->buf[w->len++] = (char)v;
    return 0;
}

static inline int
w_raw(wbuf *w, const void *p, Py_ssize_t n)
{
    if (w_reserve(w, n) < 0) {
        return -1;
    }
    memcpy(w->buf + w->len, p, (size_t)n);
    w->len += n;
    return 0;
}

/* A tag and a varint, reserving room for both at once. */
static inline int
w_tag_len(wbuf *w, int tag, uint64_t v)
{
    if (w_reserve(w, 11) < 0) {
        return -1;
    }
    w->buf[w->len++] = (char)tag;
    while (v >= 0x80) {
        w->buf[w->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    w->buf[w->len++] = (char)v;
    return 0;
}

/* The memo: objects already written, by address (the walk holds the GIL and runs no
 * Python code, so no address is reused while it lasts). */
typedef struct {
    PyObject *key;
    Py_ssize_t index;
    int busy;               /* a tuple or frozenset whose items are being written */
} mslot;

typedef struct {
    mslot *t;
    Py_ssize_t cap, used;
} memo;

static inline size_t
m_hash(PyObject *o, Py_ssize_t cap)
{
    uintptr_t x = (uintptr_t)o >> 4;
    x ^= x >> 17;
    x *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 7) & (size_t)(cap - 1);
}

static mslot *
m_find(memo *m, PyObject *o)
{
    if (m->cap == 0) {
        return NULL;
    }
    size_t i = m_hash(o, m->cap);
    while (m->t[i].key != NULL) {
        if (m->t[i].key == o) {
            return &m->t[i];
        }
        i = (i + 1) & (size_t)(m->cap - 1);
    }
    return NULL;
}

static mslot *
m_add(memo *m, PyObject *o, Py_ssize_t index)
{
    if ((m->used + 1) * 2 > m->cap) {
        Py_ssize_t cap = m->cap ? m->cap * 2 : 64;
        mslot *t = PyMem_Calloc((size_t)cap, sizeof(mslot));
        if (t == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t j = 0; j < m->cap; j++) {
            if (m->t[j].key != NULL) {
                size_t i = m_hash(m->t[j].key, cap);
                while (t[i].key != NULL) {
                    i = (i + 1) & (size_t)(cap - 1);
                }
                t[i] = m->t[j];
            }
        }
        PyMem_Free(m->t);
        m->t = t;
        m->cap = cap;
    }
    size_t i = m_hash(o, m->cap);
    while (m->t[i].key != NULL) {
        i = (i + 1) & (size_t)(m->cap - 1);
    }
    m->t[i].key = o;
    m->t[i].index = index;
    m->t[i].busy = 0;
    m->used++;
    return &m->t[i];
}

typedef struct {
    PyObject *obj;          /* a strong reference */
    int kind;               /* T_LIST ... T_FROZENSET */
    int memoized;           /* a tuple or frozenset in the memo: busy until popped */
    Py_ssize_t i, n;        /* items written, items announced */
    Py_ssize_t pos;         /* T_DICT: PyDict_Next's position */
    PyObject *pending;      /* T_DICT: the value to write after its key (borrowed: the
                             * dict holds it, and no Python code runs until it is written) */
    PyObject *iter;         /* T_SET, T_FROZENSET: the iterator (strong) */
} wframe;

typedef struct {
    wbuf w;
    memo m;
    Py_ssize_t nmemo;
    PyObject *leaves;       /* a list, made on the first leaf */
    wframe *stack;
    Py_ssize_t depth, cap;
    int fallback;           /* a cycle through a tuple or frozenset: pickle it all */
} writer;

static int
push(writer *wr, PyObject *obj, int kind, Py_ssize_t n, int memoized)
{
    if (wr->depth == wr->cap) {
        Py_ssize_t cap = wr->cap ? wr->cap * 2 : 32;
        wframe *s = PyMem_Realloc(wr->stack, (size_t)cap * sizeof(wframe));
        if (s == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        wr->stack = s;
        wr->cap = cap;
    }
    PyObject *iter = NULL;
    if (kind == T_SET || kind == T_FROZENSET) {
        iter = PyObject_GetIter(obj);   /* a set's iterator: C, no Python code */
        if (iter == NULL) {
            return -1;
        }
    }
    wframe *f = &wr->stack[wr->depth++];
    f->obj = Py_NewRef(obj);
    f->kind = kind;
    f->memoized = memoized;
    f->i = 0;
    f->n = n;
    f->pos = 0;
    f->pending = NULL;
    f->iter = iter;
    return 0;
}

static void
pop(writer *wr)
{
    wframe *f = &wr->stack[--wr->depth];
    if (f->memoized) {
        mslot *s = m_find(&wr->m, f->obj);
        if (s != NULL) {
            s->busy = 0;
        }
    }
    Py_DECREF(f->obj);
    Py_XDECREF(f->iter);
}

/* The memo's part of writing ``o``: 1 when a reference (or nothing, on fallback) was
 * written in its place, 0 when it is to be written with ``*put`` added to its tag. */
static int
remember(writer *wr, PyObject *o, int *put, int busy)
{
    *put = 0;
    if (Py_REFCNT(o) <= 1) {
        return 0;           /* referenced only from here: cannot be met again */
    }
    mslot *s = m_find(&wr->m, o);
    if (s != NULL) {
        if (s->busy) {
            wr->fallback = 1;
            return 1;
        }
        return w_tag_len(&wr->w, T_REF, (uint64_t)s->index) < 0 ? -1 : 1;
    }
    s = m_add(&wr->m, o, wr->nmemo++);
    if (s == NULL) {
        return -1;
    }
    s->busy = busy;
    *put = MEMO_PUT;
    return 0;
}

static int
write_int(wbuf *w, PyObject *o)
{
    int overflow = 0;
    long long v;
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {   /* one digit: most ints */
        v = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    }
    else {
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (!overflow) {
        if (v >= -128 && v <= 127) {
            if (w_reserve(w, 2) < 0) {
                return -1;
            }
            w->buf[w->len++] = T_I8;
            w->buf[w->len++] = (char)(int8_t)v;
            return 0;
        }
        if (v >= INT32_MIN && v <= INT32_MAX) {
            int32_t x = (int32_t)v;
            if (w_u8(w, T_I32) < 0) {
                return -1;
            }
            return w_raw(w, &x, 4);
        }
        int64_t x = (int64_t)v;
        if (w_u8(w, T_I64) < 0) {
            return -1;
        }
        return w_raw(w, &x, 8);
    }
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t n = PyLong_AsNativeBytes(o, NULL, 0, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
    if (n < 0) {
        return -1;
    }
    if (w_tag_len(w, T_BIGINT, (uint64_t)n) < 0 || w_reserve(w, n) < 0) {
        return -1;
    }
    if (PyLong_AsNativeBytes(o, w->buf + w->len, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN) < 0) {
        return -1;
    }
#else
    size_t bits = _PyLong_NumBits(o);
    if (bits == (size_t)-1 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t n = (Py_ssize_t)(bits / 8 + 1);   /* room for the sign bit */
    if (w_tag_len(w, T_BIGINT, (uint64_t)n) < 0 || w_reserve(w, n) < 0) {
        return -1;
    }
    if (_PyLong_AsByteArray((PyLongObject *)o, (unsigned char *)w->buf + w->len, (size_t)n, 1, 1) < 0) {
        return -1;
    }
#endif
    w->len += n;
    return 0;
}

static int
write_str(writer *wr, PyObject *o)
{
    int put;
    int r = remember(wr, o, &put, 0);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(o);
    int kind = PyUnicode_KIND(o);
    int tag = kind == PyUnicode_1BYTE_KIND ? T_STR1 : kind == PyUnicode_2BYTE_KIND ? T_STR2 : T_STR4;
    if (w_tag_len(&wr->w, tag | put, (uint64_t)n) < 0) {
        return -1;
    }
    return w_raw(&wr->w, PyUnicode_DATA(o), n * kind);
}

/* Write one value; a container with items is pushed, its items written by the loop. */
static int
write_value(writer *wr, PyObject *o)
{
    wbuf *w = &wr->w;
    PyTypeObject *tp = Py_TYPE(o);
    int put, r;
    if (o == Py_None) {
        return w_u8(w, T_NONE);
    }
    if (tp == &PyLong_Type) {
        return write_int(w, o);
    }
    if (tp == &PyUnicode_Type) {
        return write_str(wr, o);
    }
    if (tp == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        if (w_reserve(w, 9) < 0) {
            return -1;
        }
        w->buf[w->len++] = T_FLOAT;
        memcpy(w->buf + w->len, &d, 8);
        w->len += 8;
        return 0;
    }
    if (o == Py_True || o == Py_False) {
        return w_u8(w, o == Py_True ? T_TRUE : T_FALSE);
    }
    if (tp == &PyTuple_Type || tp == &PyList_Type || tp == &PyDict_Type || tp == &PySet_Type ||
        tp == &PyFrozenSet_Type) {
        int kind = tp == &PyTuple_Type ? T_TUPLE : tp == &PyList_Type ? T_LIST
                 : tp == &PyDict_Type ? T_DICT : tp == &PySet_Type ? T_SET : T_FROZENSET;
        int immutable = kind == T_TUPLE || kind == T_FROZENSET;
        Py_ssize_t n = kind == T_TUPLE ? PyTuple_GET_SIZE(o) : kind == T_LIST ? PyList_GET_SIZE(o)
                     : kind == T_DICT ? PyDict_GET_SIZE(o) : PySet_GET_SIZE(o);
        r = remember(wr, o, &put, immutable && n > 0);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
        if (w_tag_len(w, kind | put, (uint64_t)n) < 0) {
            return -1;
        }
        return n == 0 ? 0 : push(wr, o, kind, n, immutable && put);
    }
    if (tp == &PyBytes_Type || tp == &PyByteArray_Type) {
        r = remember(wr, o, &put, 0);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
        int bytes = tp == &PyBytes_Type;
        Py_ssize_t n = bytes ? PyBytes_GET_SIZE(o) : PyByteArray_GET_SIZE(o);
        if (w_tag_len(w, (bytes ? T_BYTES : T_BYTEARRAY) | put, (uint64_t)n) < 0) {
            return -1;
        }
        return w_raw(w, bytes ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o), n);
    }
    if (tp == &PyComplex_Type) {
        Py_complex c = ((PyComplexObject *)o)->cval;
        if (w_u8(w, T_COMPLEX) < 0) {
            return -1;
        }
        return w_raw(w, &c, 16);
    }
    /* A leaf: pickled with the others after the walk. */
    r = remember(wr, o, &put, 0);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    if (wr->leaves == NULL && (wr->leaves = PyList_New(0)) == NULL) {
        return -1;
    }
    Py_ssize_t index = PyList_GET_SIZE(wr->leaves);
    if (PyList_Append(wr->leaves, o) < 0) {
        return -1;
    }
    return w_tag_len(w, T_LEAF | put, (uint64_t)index);
}

static int
changed(wframe *f)
{
    static const char *names[] = {
        [T_LIST] = "list", [T_TUPLE] = "tuple", [T_DICT] = "dict", [T_SET] = "set", [T_FROZENSET] = "frozenset",
    };
    PyErr_Format(PyExc_RuntimeError,
                 "a %s changed size while manygil copied it to another interpreter; "
                 "do not change a value while it is being sent (send a copy)", names[f->kind]);
    return -1;
}

/* The next item of the frame on top: write it (it may push a frame), or pop the frame. */
static int
step(writer *wr)
{
    wframe *f = &wr->stack[wr->depth - 1];
    PyObject *item;
    switch (f->kind) {
    case T_LIST:
    case T_TUPLE: {
        /* Items until one pushes a frame (a container) or the end. */
        Py_ssize_t depth = wr->depth;
        PyObject *seq = f->obj;
        int list = f->kind == T_LIST;
        while (wr->depth == depth) {
            f = &wr->stack[depth - 1];
            if (list && PyList_GET_SIZE(seq) != f->n) {
                return changed(f);
            }
            if (f->i == f->n) {
                pop(wr);
                return 0;
            }
            item = list ? PyList_GET_ITEM(seq, f->i) : PyTuple_GET_ITEM(seq, f->i);
            f->i++;
            if (write_value(wr, item) < 0 || wr->fallback) {
                return wr->fallback ? 0 : -1;
            }
        }
        return 0;
    }
    case T_DICT: {
        if (f->pending != NULL) {
            item = f->pending;
            f->pending = NULL;
            return write_value(wr, item);
        }
        if (PyDict_GET_SIZE(f->obj) != f->n) {
            return changed(f);
        }
        PyObject *key, *value;
        if (!PyDict_Next(f->obj, &f->pos, &key, &value)) {
            if (f->i != f->n) {
                return changed(f);
            }
            pop(wr);
            return 0;
        }
        if (++f->i > f->n) {
            return changed(f);
        }
        f->pending = value;
        return write_value(wr, key);
    }
    default: /* T_SET, T_FROZENSET */
        item = PyIter_Next(f->iter);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            if (f->i != f->n) {
                return changed(f);
            }
            pop(wr);
            return 0;
        }
        /* Borrowed from here on (the set holds it), so that the walk's own reference
         * does not make remember() take it for a shared object. */
        Py_DECREF(item);
        if (++f->i > f->n) {
            return changed(f);
        }
        return write_value(wr, item);
    }
}

static int
is_container(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    return tp == &PyList_Type || tp == &PyDict_Type || tp == &PySet_Type || tp == &PyTuple_Type ||
           tp == &PyFrozenSet_Type || tp == &PyByteArray_Type;
}

/* The ids of the memo's containers, for leaf_dumper to check that the leaves do not
 * reach into the tree (which the receiver could not rebuild with their identity). */
static PyObject *
shared_ids(writer *wr)
{
    PyObject *ids = PySet_New(NULL);
    if (ids == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < wr->m.cap; j++) {
        PyObject *o = wr->m.t[j].key;
        if (o != NULL && is_container(o)) {
            PyObject *id = PyLong_FromVoidPtr(o);
            if (id == NULL || PySet_Add(ids, id) < 0) {
                Py_XDECREF(id);
                Py_DECREF(ids);
                return NULL;
            }
            Py_DECREF(id);
        }
    }
    return ids;
}

static int
is_leaf(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    return !(o == Py_None || tp == &PyLong_Type || tp == &PyUnicode_Type || tp == &PyFloat_Type ||
             tp == &PyBool_Type || tp == &PyBytes_Type || tp == &PyByteArray_Type ||
             tp == &PyComplex_Type || is_container(o));
}

/* copy_dumps(obj, leaf_dumper) -> bytes | None
 *
 * None: pickle the whole value instead (it is a leaf itself, a cycle runs through a
 * tuple or frozenset, or leaf_dumper returned None).  leaf_dumper(leaves, shared) gets
 * the list of leaves and the set of ids of the tree's containers that may be shared (or
 * None when the tree has none), and returns their pickle, or None. */
PyObject *
mg_copy_dumps(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "copy_dumps(obj, leaf_dumper) takes 2 arguments");
        return NULL;
    }
    PyObject *obj = args[0];
    if (is_leaf(obj)) {
        Py_RETURN_NONE;
    }
    writer wr;
    memset(&wr, 0, sizeof(wr));
    PyObject *result = NULL, *leaf_bytes = NULL;
    if (w_reserve(&wr.w, HEADER_SIZE + 64) < 0) {
        goto done;
    }
    wr.w.len = HEADER_SIZE;
    if (write_value(&wr, obj) < 0) {
        goto done;
    }
    while (wr.depth > 0 && !wr.fallback) {
        if (step(&wr) < 0) {
            goto done;
        }
    }
    if (wr.fallback) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    uint64_t leaves_at = 0;
    uint32_t nleaves = 0;
    if (wr.leaves != NULL) {
        PyObject *shared = wr.m.used ? shared_ids(&wr) : Py_NewRef(Py_None);
        if (shared == NULL) {
            goto done;
        }
        if (shared != Py_None && PySet_GET_SIZE(shared) == 0) {
            Py_SETREF(shared, Py_NewRef(Py_None));
        }
        leaf_bytes = PyObject_CallFunctionObjArgs(args[1], wr.leaves, shared, NULL);
        Py_DECREF(shared);
        if (leaf_bytes == NULL) {
            goto done;
        }
        if (leaf_bytes == Py_None) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (!PyBytes_Check(leaf_bytes)) {
            PyErr_SetString(PyExc_TypeError, "copy_dumps: leaf_dumper must return bytes or None");
            goto done;
        }
        leaves_at = (uint64_t)wr.w.len;
        nleaves = (uint32_t)PyList_GET_SIZE(wr.leaves);
    }
    if (wr.nmemo > UINT32_MAX || (wr.leaves && PyList_GET_SIZE(wr.leaves) > UINT32_MAX)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    uint32_t nmemo = (uint32_t)wr.nmemo;
    unsigned char *h = (unsigned char *)wr.w.buf;
    h[0] = MG_COPY_MAGIC;
    h[1] = COPY_VERSION;
    memcpy(h + 2, &nmemo, 4);
    memcpy(h + 6, &nleaves, 4);
    memcpy(h + 10, &leaves_at, 8);
    /* One allocation, each part copied once (a large leaf, say an array, is not copied
     * again by a growing buffer). */
    Py_ssize_t nleaf = leaf_bytes ? PyBytes_GET_SIZE(leaf_bytes) : 0;
    if (nleaf > PY_SSIZE_T_MAX - wr.w.len) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, wr.w.len + nleaf);
    if (result != NULL) {
        memcpy(PyBytes_AS_STRING(result), wr.w.buf, (size_t)wr.w.len);
        if (nleaf) {
            memcpy(PyBytes_AS_STRING(result) + wr.w.len, PyBytes_AS_STRING(leaf_bytes), (size_t)nleaf);
        }
    }
done:
    while (wr.depth > 0) {
        pop(&wr);
    }
    PyMem_Free(wr.stack);
    PyMem_Free(wr.m.t);
    PyMem_Free(wr.w.buf);
    Py_XDECREF(wr.leaves);
    Py_XDECREF(leaf_bytes);
    return result;
}

/* ------------------------------------------------------------------ reading */

typedef struct {
    PyObject *obj;          /* the container being filled (strong) */
    int kind;
    Py_ssize_t i, n;
    Py_ssize_t slot;        /* a tuple or frozenset's memo index, filled once complete; -1 */
    PyObject *key;          /* T_DICT: the key read, waiting for its value (strong) */
} rframe;

typedef struct {
    const unsigned char *p, *end;
    PyObject **memo;
    Py_ssize_t nmemo, used;
    PyObject *leaves;
    rframe *stack;
    Py_ssize_t depth, cap;
    void *scratch;          /* aligned room for 2- and 4-byte string data */
    Py_ssize_t scratch_size;
} reader;

static PyObject *
corrupt(const char *what)
{
    PyErr_Format(PyExc_ValueError, "manygil: a copied value is corrupt (%s)", what);
    return NULL;
}

static inline int
r_varint(reader *rd, Py_ssize_t *out)
{
    uint64_t v = 0;
    int shift = 0;
    while (rd->p < rd->end && shift < 63) {
        unsigned char b = *rd->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            if (v > (uint64_t)PY_SSIZE_T_MAX) {
                break;
            }
            *out = (Py_ssize_t)v;
            return 0;
        }
        shift += 7;
    }
    corrupt("a length");
    return -1;
}

static inline int
r_need(reader *rd, Py_ssize_t n)
{
    if (n < 0 || rd->end - rd->p < n) {
        corrupt("it ends early");
        return -1;
    }
    return 0;
}

/* ``n`` bytes of a fixed-size value (an int, a double) into ``out``. */
static inline int
r_fixed(reader *rd, void *out, Py_ssize_t n)
{
    if (r_need(rd, n) < 0) {
        return -1;
    }
    memcpy(out, rd->p, (size_t)n);
    rd->p += n;
    return 0;
}

static int
r_push(reader *rd, PyObject *obj, int kind, Py_ssize_t n, Py_ssize_t slot)
{
    if (rd->depth == rd->cap) {
        Py_ssize_t cap = rd->cap ? rd->cap * 2 : 32;
        rframe *s = PyMem_Realloc(rd->stack, (size_t)cap * sizeof(rframe));
        if (s == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        rd->stack = s;
        rd->cap = cap;
    }
    rframe *f = &rd->stack[rd->depth++];
    f->obj = obj;
    f->kind = kind;
    f->i = 0;
    f->n = n;
    f->slot = slot;
    f->key = NULL;
    return 0;
}

static PyObject *
read_str(reader *rd, int kind)
{
    Py_ssize_t n;
    if (r_varint(rd, &n) < 0) {
        return NULL;
    }
    if (n > (rd->end - rd->p) / kind || r_need(rd, n * kind) < 0) {
        return corrupt("a string");
    }
    const void *p = rd->p;
    rd->p += n * kind;
    if (kind > 1 && ((uintptr_t)p % (uintptr_t)kind) != 0) {
        /* CPython reads Py_UCS2 and Py_UCS4 data as such: it must be aligned. */
        if (rd->scratch_size < n * kind) {
            void *room = PyMem_Realloc(rd->scratch, (size_t)(n * kind));
            if (room == NULL) {
                return PyErr_NoMemory();
            }
            rd->scratch = room;
            rd->scratch_size = n * kind;
        }
        memcpy(rd->scratch, p, (size_t)(n * kind));
        p = rd->scratch;
    }
    /* Checked and made canonical (the narrowest kind) by CPython itself. */
    PyObject *v = PyUnicode_FromKindAndData(kind, p, n);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_SystemError)) {   /* above U+10FFFF */
        PyErr_Clear();
        return corrupt("a string");
    }
    return v;
}

/* Read one record: a complete value (new reference), or NULL with *pushed set when a
 * container was pushed for its items to fill.  NULL without *pushed: an error. */
static PyObject *
read_value(reader *rd, int *pushed)
{
    *pushed = 0;
    if (r_need(rd, 1) < 0) {
        return NULL;
    }
    int tag = *rd->p++;
    int put = tag & MEMO_PUT;
    tag &= ~MEMO_PUT;
    PyObject *v = NULL;
    Py_ssize_t n;
    switch (tag) {
    case T_NONE: v = Py_NewRef(Py_None); break;
    case T_TRUE: v = Py_NewRef(Py_True); break;
    case T_FALSE: v = Py_NewRef(Py_False); break;
    case T_I8:
        if (r_need(rd, 1) < 0) {
            return NULL;
        }
        v = PyLong_FromLong((int8_t)*rd->p++);
        break;
    case T_I32: {
        int32_t x;
        if (r_fixed(rd, &x, 4) < 0) {
            return NULL;
        }
        v = PyLong_FromLong(x);
        break;
    }
    case T_I64: {
        int64_t x;
        if (r_fixed(rd, &x, 8) < 0) {
            return NULL;
        }
        v = PyLong_FromLongLong(x);
        break;
    }
    case T_BIGINT:
        if (r_varint(rd, &n) < 0 || r_need(rd, n) < 0) {
            return NULL;
        }
#if PY_VERSION_HEX >= 0x030D0000
        v = PyLong_FromNativeBytes(rd->p, (size_t)n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
        v = _PyLong_FromByteArray(rd->p, (size_t)n, 1, 1);
#endif
        rd->p += n;
        break;
    case T_FLOAT: {
        double d;
        if (r_fixed(rd, &d, 8) < 0) {
            return NULL;
        }
        v = PyFloat_FromDouble(d);
        break;
    }
    case T_COMPLEX: {
        Py_complex c;
        if (r_fixed(rd, &c, 16) < 0) {
            return NULL;
        }
        v = PyComplex_FromCComplex(c);
        break;
    }
    case T_STR1: v = read_str(rd, PyUnicode_1BYTE_KIND); break;
    case T_STR2: v = read_str(rd, PyUnicode_2BYTE_KIND); break;
    case T_STR4: v = read_str(rd, PyUnicode_4BYTE_KIND); break;
    case T_BYTES:
    case T_BYTEARRAY:
        if (r_varint(rd, &n) < 0 || r_need(rd, n) < 0) {
            return NULL;
        }
        v = tag == T_BYTES ? PyBytes_FromStringAndSize((const char *)rd->p, n)
                           : PyByteArray_FromStringAndSize((const char *)rd->p, n);
        rd->p += n;
        break;
    case T_REF:
        if (r_varint(rd, &n) < 0) {
            return NULL;
        }
        if (put || n >= rd->used || rd->memo[n] == NULL) {
            return corrupt("a reference");
        }
        return Py_NewRef(rd->memo[n]);
    case T_LEAF:
        if (r_varint(rd, &n) < 0) {
            return NULL;
        }
        if (rd->leaves == NULL || n >= PyList_GET_SIZE(rd->leaves)) {
            return corrupt("a leaf");
        }
        v = Py_NewRef(PyList_GET_ITEM(rd->leaves, n));
        break;
    case T_LIST: case T_TUPLE: case T_DICT: case T_SET: case T_FROZENSET:
        if (r_varint(rd, &n) < 0) {
            return NULL;
        }
        if (n > rd->end - rd->p) {     /* every item takes a byte at least */
            return corrupt("a length");
        }
        v = tag == T_LIST ? PyList_New(n) : tag == T_TUPLE ? PyTuple_New(n) : tag == T_DICT ? PyDict_New()
          : tag == T_SET ? PySet_New(NULL) : PyFrozenSet_New(NULL);
        if (v == NULL) {
            return NULL;
        }
        if (n > 0) {
            Py_ssize_t slot = -1;
            if (tag == T_LIST || tag == T_TUPLE) {
                /* Its empty slots must not be seen while it is filled: a leaf's __hash__
                 * or __eq__ (a dict key) may run code that walks gc.get_objects(). */
                PyObject_GC_UnTrack(v);
            }
            if (put) {
                if (rd->used >= rd->nmemo) {
                    Py_DECREF(v);
                    return corrupt("the memo");
                }
                slot = rd->used++;
                /* A tuple or frozenset is remembered once complete (no reference may
                 * reach it before: copy_dumps pickles such a value instead); a frozenset
                 * must have one reference while PySet_Add fills it. */
                if (tag != T_TUPLE && tag != T_FROZENSET) {
                    rd->memo[slot] = Py_NewRef(v);
                    slot = -1;
                }
            }
            if (r_push(rd, v, tag, n, slot) < 0) {
                Py_DECREF(v);
                return NULL;
            }
            *pushed = 1;
            return NULL;
        }
        break;
    default:
        return corrupt("an unknown record");
    }
    if (v != NULL && put) {
        if (rd->used >= rd->nmemo) {
            Py_DECREF(v);
            return corrupt("the memo");
        }
        rd->memo[rd->used++] = Py_NewRef(v);
    }
    return v;
}

/* Put ``v`` (stolen) into the container on top. */
static int
attach(reader *rd, PyObject *v)
{
    rframe *f = &rd->stack[rd->depth - 1];
    int r = 0;
    switch (f->kind) {
    case T_LIST:
        PyList_SET_ITEM(f->obj, f->i++, v);
        return 0;
    case T_TUPLE:
        PyTuple_SET_ITEM(f->obj, f->i++, v);
        return 0;
    case T_DICT:
        if (f->key == NULL) {
            f->key = v;
            return 0;
        }
        r = PyDict_SetItem(f->obj, f->key, v);
        Py_CLEAR(f->key);
        Py_DECREF(v);
        f->i++;
        return r;
    default:
        r = PySet_Add(f->obj, v);
        Py_DECREF(v);
        f->i++;
        return r;
    }
}

static void
r_clear(reader *rd)
{
    while (rd->depth > 0) {
        rframe *f = &rd->stack[--rd->depth];
        Py_DECREF(f->obj);
        Py_XDECREF(f->key);
    }
    PyMem_Free(rd->stack);
    if (rd->memo != NULL) {
        for (Py_ssize_t j = 0; j < rd->used; j++) {
            Py_XDECREF(rd->memo[j]);
        }
        PyMem_Free(rd->memo);
    }
    Py_XDECREF(rd->leaves);
    PyMem_Free(rd->scratch);
}

static PyObject *
read_tree(reader *rd)
{
    for (;;) {
        int pushed;
        PyObject *v = read_value(rd, &pushed);
        if (v == NULL) {
            if (!pushed) {
                return NULL;
            }
            continue;
        }
        /* A complete value: into its container, and complete containers upwards. */
        for (;;) {
            if (rd->depth == 0) {
                return v;
            }
            if (attach(rd, v) < 0) {
                return NULL;
            }
            rframe *f = &rd->stack[rd->depth - 1];
            if (f->i < f->n) {
                break;
            }
            rd->depth--;
            v = f->obj;
            if (f->kind == T_LIST || f->kind == T_TUPLE) {
                PyObject_GC_Track(v);
            }
            if (f->slot >= 0) {
                rd->memo[f->slot] = Py_NewRef(v);
            }
        }
    }
}

/* copy_loads(data, leaf_loader) -> the value copy_dumps wrote; leaf_loader(memoryview)
 * unpickles the leaves (a list). */
PyObject *
mg_copy_loads(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "copy_loads(data, leaf_loader) takes 2 arguments");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    reader rd;
    memset(&rd, 0, sizeof(rd));
    PyObject *result = NULL;
    const unsigned char *base = view.buf;
    uint32_t nmemo, nleaves;
    uint64_t leaves_at;
    if (view.len < HEADER_SIZE || base[0] != MG_COPY_MAGIC || base[1] != COPY_VERSION) {
        corrupt("its header");
        goto done;
    }
    memcpy(&nmemo, base + 2, 4);
    memcpy(&nleaves, base + 6, 4);
    memcpy(&leaves_at, base + 10, 8);
    rd.p = base + HEADER_SIZE;
    rd.end = base + view.len;
    if (leaves_at != 0) {
        if (leaves_at < HEADER_SIZE || leaves_at > (uint64_t)view.len) {
            corrupt("its leaves");
            goto done;
        }
        rd.end = base + leaves_at;
        PyObject *mv = PyMemoryView_FromMemory((char *)base + leaves_at, view.len - (Py_ssize_t)leaves_at,
                                               PyBUF_READ);
        if (mv == NULL) {
            goto done;
        }
        rd.leaves = PyObject_CallOneArg(args[1], mv);
        /* The view points into ``data``'s buffer, released below: no one may keep it. */
        PyObject *exc = rd.leaves == NULL ? PyErr_GetRaisedException() : NULL;
        PyObject *released = PyObject_CallMethod(mv, "release", NULL);
        Py_DECREF(mv);
        if (exc != NULL) {
            Py_XDECREF(released);
            PyErr_Clear();
            PyErr_SetRaisedException(exc);
            goto done;
        }
        if (released == NULL) {
            Py_CLEAR(rd.leaves);
            goto done;
        }
        Py_DECREF(released);
        if (!PyList_CheckExact(rd.leaves) || PyList_GET_SIZE(rd.leaves) != (Py_ssize_t)nleaves) {
            corrupt("its leaves");
            goto done;
        }
    }
    if (nmemo > (uint64_t)(rd.end - rd.p)) {
        corrupt("the memo");
        goto done;
    }
    rd.nmemo = nmemo;
    if (nmemo > 0 && (rd.memo = PyMem_Calloc(nmemo, sizeof(PyObject *))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    result = read_tree(&rd);
    if (result != NULL && rd.p != rd.end) {
        Py_CLEAR(result);
        corrupt("data after the value");
    }
done:
    r_clear(&rd);
    PyBuffer_Release(&view);
    return result;
}
