/*
 * manygil._native's structural copier (_copier.c): trees of built-in objects copied
 * from one interpreter to another without pickle.  Declared here for the module table
 * in _native_module.c.  The copier owns no process-global state: everything it uses lives on
 * the calling thread's C stack or in memory it frees before it returns.
 */
#ifndef MANYGIL_COPIER_H
#define MANYGIL_COPIER_H

#include <Python.h>

/* The first byte of a copy: pickle's protocol 2+ streams start with 0x80 (PROTO), so a
 * reader tells the two apart by it. */
#define MG_COPY_MAGIC 0xC7

PyObject *mg_copy_dumps(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *mg_copy_loads(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

#endif
