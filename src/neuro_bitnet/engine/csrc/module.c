/* Python module `neuro_bitnet.engine._core`: the entry points of the C compute core. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "cpu.h"

static PyObject *py_cpu_features(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return Py_BuildValue("{s:O,s:O,s:O,s:O}",
                         "avx2", cpu_has_avx2() ? Py_True : Py_False,
                         "fma", cpu_has_fma() ? Py_True : Py_False,
                         "f16c", cpu_has_f16c() ? Py_True : Py_False,
                         "neon", cpu_has_neon() ? Py_True : Py_False);
}

static PyMethodDef core_methods[] = {
    {"cpu_features", py_cpu_features, METH_NOARGS, "CPU features the kernels can dispatch on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core", "BitNet compute core (C).", -1, core_methods,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModule_Create(&core_module); }
