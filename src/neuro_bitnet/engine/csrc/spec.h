/* Parsing of the Python spec dict (see the Model docstring) into the C model config. */
#ifndef NB_SPEC_H
#define NB_SPEC_H

#include <Python.h>

#include "model.h"

/* Read-only buffer views held for a Model's lifetime. */
typedef struct {
    Py_buffer *items;
    int n, cap;
} buffer_list;

void buffers_release(buffer_list *bl);
/* Fills cfg from the spec dict (the layer table into *layers_out, to PyMem_Free after the model
 * is built); views go to bl. Returns 0, or -1 with ValueError naming the bad key or tensor. */
int parse_spec(PyObject *spec, buffer_list *bl, nb_config *c, nb_layer **layers_out);

#endif
