/* A GGUF string array read in C (see gguf_strings.c). */
#ifndef NB_GGUF_STRINGS_H
#define NB_GGUF_STRINGS_H

#include <Python.h>

PyObject *nb_read_gguf_strings(PyObject *self, PyObject *args);

#endif
