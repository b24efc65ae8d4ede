/*
 * manygil._native's internal header: the types every file of the module shares (an
 * entry of the registry and a channel's item), and the functions one file offers the
 * others.  Python-visible functions are declared at the end, by file, for the method
 * table in _native_module.c.  Not installed; nothing outside this extension sees it.
 */
#ifndef MANYGIL_NATIVE_H
#define MANYGIL_NATIVE_H

#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "mg_platform.h"   /* every OS call: no file of the module includes an OS header */

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
    mg_mutex mu;
    mg_cond cond;             /* CHAN: not empty; SYNC: any change */
    mg_cond cond2;            /* CHAN: not full */
    /* CHAN: a semaphore counts the items (and one the free places when bounded), so
     * a hand-off is one futex wake, not a condition variable plus a mutex. */
    item *head, *tail;
    Py_ssize_t count, maxsize;  /* count leaves out items removed but still linked */
    int unbound;              /* the default of chan_put(unbound=-1) */
    mg_sem items, space;
    int has_sems;
    /* BLOCK */
    char *mem;
    Py_ssize_t size;
    int fd;                   /* a memfd that mem maps (Linux; another process may map it), or -1 */
    int paged;                /* mem is mg_pages_alloc()'s (a large block without a memfd) */
    int borrowed;             /* made by block_borrow(): mem and lent are read under mu */
    int lent;                 /* borrowed: 1 while mem is the owner's object's, 0 once it is a
                               * copy of its own (freed with the entry), -1 once gone */
    int readers;              /* borrowed: copies out of mem in progress (under mu) */
    /* SYNC */
    int64_t value, aux, limit;
    int broken;
} entry;

/* Waits longer than this (threading.TIMEOUT_MAX: 2**63 ns) are waits without a
 * deadline: a deadline that far off cannot be reached. */
#define FOREVER_AFTER 9223372036.0

/* The layout every handle type starts with: one reference to one registry entry. */
typedef struct {
    PyObject_HEAD
    entry *e;
} Handle;

/* _native_registry.c (reg_mu guards everything it owns) */
entry *mg_new_entry(int kind);
entry *mg_acquire_entry(int64_t id, int kind);
entry *mg_entry_from_arg(PyObject *arg, int kind);
void mg_retain_entry(entry *e);
void mg_release_entry(entry *e);
void mg_release_id(int64_t id);
void mg_free_item(item *it);
int64_t mg_entry_refs(entry *e);
entry **mg_entries_of_kind(int kind, Py_ssize_t *n);
void mg_count_copied(Py_ssize_t size);
void mg_handle_dealloc(PyObject *op);

/* _native_wait.c */
typedef int (*ready_fn)(entry *e, void *arg);
/* Runs under the entry's mutex once ready; returns a condition to signal after the
 * mutex is released (signalling while holding it would wake a thread only to block
 * it again on the mutex), or NULL. */
typedef mg_cond *(*act_fn)(entry *e, void *arg);
int mg_block_until(entry *e, mg_cond *c, ready_fn ready, act_fn act, void *arg,
                   double timeout);
int mg_seconds_of(PyObject *obj, double *t);
int mg_parse_timeout(PyObject *obj, double *out);
int mg_poll_briefly(int (*ready)(void *), void *arg, double spin);
PyObject *mg_spin_state(PyObject *mod, PyObject *unused);
PyObject *mg_set_spin_budget(PyObject *mod, PyObject *arg);
int mg_sem_take_spinning(mg_sem *sem, double timeout, double spin);
int mg_sem_take(mg_sem *sem, double timeout);

/* _native_chan.c */
void mg_unbind_interpreter(void *data);

/* _native_sync.c, _native_block.c */
extern PyType_Spec mg_syncobj_spec;
extern PyType_Spec mg_blockview_spec;

/* _native_home.c */
void mg_fork_guard_install_once(void);

/* The module's functions, by the file that holds them. */
#define MG_FN(name) PyObject *name(PyObject *mod, PyObject *arg)
MG_FN(native_retain); MG_FN(native_release); MG_FN(native_refcount); MG_FN(native_live);
MG_FN(native_copied_into_blocks);
MG_FN(chan_create); MG_FN(chan_put); MG_FN(chan_get); MG_FN(chan_info);
MG_FN(sync_create); MG_FN(sync_acquire); MG_FN(sync_release); MG_FN(sync_add);
MG_FN(sync_cas); MG_FN(sync_set); MG_FN(sync_get); MG_FN(sync_wait_nonzero);
MG_FN(cond_enter); MG_FN(cond_wait); MG_FN(cond_notify); MG_FN(barrier_wait);
MG_FN(barrier_set);
MG_FN(block_create); MG_FN(block_from); MG_FN(block_bytes); MG_FN(block_borrow);
MG_FN(block_disown); MG_FN(block_fd);
MG_FN(native_home_calls); MG_FN(native_await_home_call); MG_FN(native_set_async_exc);
MG_FN(native_current_frames); MG_FN(native_push_home); MG_FN(native_pop_home);
MG_FN(native_call_home); MG_FN(native_set_fork_guard);
#undef MG_FN

#endif
