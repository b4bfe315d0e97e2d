/* The GGUF reader's hot loop in C: an array of length-prefixed UTF-8 strings (128k tokens and
 * 280k merges in a Llama-3 vocabulary) as a list of str. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "gguf_strings.h"

/* read_gguf_strings(buffer, offset, count, max_bytes) -> (list, end, status): status 0 when all
 * count strings were read (end: the offset after them); otherwise the strings read so far, the
 * offset of the bad length field or string, and status 1 (the buffer ends), 2 (a length above
 * max_bytes) or 3 (not UTF-8). The caller words the error. */
PyObject *nb_read_gguf_strings(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t offset, count;
    unsigned long long max_bytes;
    if (!PyArg_ParseTuple(args, "y*nnK:read_gguf_strings", &view, &offset, &count, &max_bytes)) return NULL;
    PyObject *out = NULL;
    int status = 0;
    const unsigned char *buf = view.buf;
    const size_t size = (size_t)view.len;
    size_t pos = offset < 0 ? size + 1 : (size_t)offset;
    if (count < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "read_gguf_strings: bad offset or count");
        goto done;
    }
    out = PyList_New(0);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (size - pos < 8) {
            status = 1;
            break;
        }
        uint64_t len;
        memcpy(&len, buf + pos, 8); /* little-endian hosts only, as the rest of the engine */
        if (len > max_bytes) {
            status = 2;
            break;
        }
        if (len > size - pos - 8) {
            status = 1;
            break;
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)buf + pos + 8, (Py_ssize_t)len, "strict");
        if (!s) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto fail;
            PyErr_Clear();
            status = 3;
            break;
        }
        int rc = PyList_Append(out, s);
        Py_DECREF(s);
        if (rc) goto fail;
        pos += 8 + (size_t)len;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(Nni)", out, (Py_ssize_t)pos, status);
    return result;
fail:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&view);
    return out;
}
