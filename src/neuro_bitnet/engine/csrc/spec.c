/* Turns the Python `spec` dict into an nb_config, keeping zero-copy views of its buffers. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "spec.h"

void buffers_release(buffer_list *bl) {
    for (int i = 0; i < bl->n; i++) PyBuffer_Release(&bl->items[i]);
    PyMem_Free(bl->items);
    bl->items = NULL;
    bl->n = bl->cap = 0;
}

/* Keeps a read-only view of obj (zero copy) and checks its size; NULL with ValueError if bad. */
static const void *take_buffer(buffer_list *bl, PyObject *obj, const char *name, size_t nbytes,
                               size_t alt_nbytes) {
    if (bl->n == bl->cap) {
        int cap = bl->cap ? bl->cap * 2 : 64;
        Py_buffer *items = PyMem_Realloc(bl->items, sizeof(Py_buffer) * (size_t)cap);
        if (!items) {
            PyErr_NoMemory();
            return NULL;
        }
        bl->items = items;
        bl->cap = cap;
    }
    Py_buffer *view = &bl->items[bl->n];
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "tensor %s: not a C-contiguous buffer (got %.100s)", name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    bl->n++;
    if ((size_t)view->len != nbytes && (size_t)view->len != alt_nbytes) {
        PyErr_Format(PyExc_ValueError, "tensor %s: %zd bytes, expected %zu", name, view->len, nbytes);
        return NULL;
    }
    return view->buf;
}

static PyObject *get_item(PyObject *dict, const char *key, const char *where) {
    PyObject *v = PyDict_GetItemString(dict, key); /* borrowed */
    if (!v) PyErr_Format(PyExc_ValueError, "%s: missing key '%s'", where, key);
    return v;
}

static int get_int(PyObject *dict, const char *key, const char *where, long lo, long hi, int *out) {
    PyObject *v = get_item(dict, key, where);
    if (!v) return -1;
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_ValueError, "%s: '%s' must be an int", where, key);
        return -1;
    }
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (x < lo || x > hi) {
        PyErr_Format(PyExc_ValueError, "%s: '%s' = %ld is out of range [%ld, %ld]", where, key, x, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int get_float(PyObject *dict, const char *key, const char *where, float *out) {
    PyObject *v = get_item(dict, key, where);
    if (!v) return -1;
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: '%s' must be a number", where, key);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int get_bool(PyObject *dict, const char *key, const char *where, int *out) {
    PyObject *v = get_item(dict, key, where);
    if (!v) return -1;
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    *out = b;
    return 0;
}

/* Index of the dict's string value in choices, or -1 with ValueError. */
static int get_choice(PyObject *dict, const char *key, const char *where, const char *const *choices) {
    PyObject *v = get_item(dict, key, where);
    if (!v) return -1;
    const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    if (s)
        for (int i = 0; choices[i]; i++)
            if (strcmp(s, choices[i]) == 0) return i;
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "%s: unsupported '%s' value %R", where, key, v);
    return -1;
}

static const char *const DTYPES[] = {"f32", "f16", "bf16", NULL};
static const size_t DTYPE_SIZE[] = {4, 2, 2};

static int get_f32_vector(buffer_list *bl, PyObject *dict, const char *key, const char *where,
                          int n, const float **out) {
    PyObject *v = get_item(dict, key, where);
    if (!v) return -1;
    char name[96];
    snprintf(name, sizeof(name), "%s.%s", where, key);
    *out = take_buffer(bl, v, name, (size_t)n * 4, (size_t)n * 4);
    return *out ? 0 : -1;
}

static int get_tmat(buffer_list *bl, PyObject *layer, const char *key, const char *where, int rows,
                    int cols, nb_tmat *out) {
    char name[96];
    snprintf(name, sizeof(name), "%s.%s", where, key);
    PyObject *d = get_item(layer, key, where);
    if (!d) return -1;
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_ValueError, "tensor %s: expected a dict with data, scale, rows, cols", name);
        return -1;
    }
    if (get_int(d, "rows", name, 1, 1L << 24, &out->rows) || get_int(d, "cols", name, 1, 1L << 24, &out->cols) ||
        get_float(d, "scale", name, &out->scale))
        return -1;
    if (out->rows != rows || out->cols != cols) {
        PyErr_Format(PyExc_ValueError, "tensor %s: shape %d x %d, expected %d x %d", name, out->rows,
                     out->cols, rows, cols);
        return -1;
    }
    if (cols % 128 != 0) {
        PyErr_Format(PyExc_ValueError, "tensor %s: cols = %d is not a multiple of 128", name, cols);
        return -1;
    }
    PyObject *data = get_item(d, "data", name);
    if (!data) return -1;
    size_t nbytes = (size_t)rows * (size_t)cols / 4;
    out->data = take_buffer(bl, data, name, nbytes, nbytes + 32); /* +32: I2_S scale trailer */
    return out->data ? 0 : -1;
}

static int parse_layer(buffer_list *bl, PyObject *layer, int il, const nb_config *c, nb_layer *L) {
    char where[32];
    snprintf(where, sizeof(where), "layers[%d]", il);
    if (!PyDict_Check(layer)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a dict", where);
        return -1;
    }
    const int E = c->n_embd, F = c->n_ff, D = c->n_head * c->head_dim, KV = c->n_head_kv * c->head_dim;
    memset(L, 0, sizeof(*L));
    if (get_f32_vector(bl, layer, "attn_norm", where, E, &L->attn_norm) ||
        get_f32_vector(bl, layer, "ffn_norm", where, E, &L->ffn_norm))
        return -1;
    if (c->sub_norms && (get_f32_vector(bl, layer, "attn_sub_norm", where, D, &L->attn_sub_norm) ||
                         get_f32_vector(bl, layer, "ffn_sub_norm", where, F, &L->ffn_sub_norm)))
        return -1;
    if (get_tmat(bl, layer, "attn_q", where, D, E, &L->q) || get_tmat(bl, layer, "attn_k", where, KV, E, &L->k) ||
        get_tmat(bl, layer, "attn_v", where, KV, E, &L->v) ||
        get_tmat(bl, layer, "attn_output", where, E, D, &L->o) ||
        get_tmat(bl, layer, "ffn_gate", where, F, E, &L->gate) ||
        get_tmat(bl, layer, "ffn_up", where, F, E, &L->up) ||
        get_tmat(bl, layer, "ffn_down", where, E, nb_padded_cols(F), &L->down))
        return -1;
    return 0;
}

int parse_spec(PyObject *spec, buffer_list *bl, nb_config *c, nb_layer **layers_out) {
    const char *w = "spec";
    static const char *const ACTS[] = {"relu2", "silu", NULL};
    static const char *const HEADS[] = {"exact", "q8", "q4", NULL}; /* enum nb_head order */
    const long MAXDIM = 1L << 20;
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_ValueError, "spec must be a dict");
        return -1;
    }
    memset(c, 0, sizeof(*c));
    if (get_int(spec, "n_vocab", w, 1, 1L << 24, &c->n_vocab) || get_int(spec, "n_embd", w, 1, MAXDIM, &c->n_embd) ||
        get_int(spec, "n_ff", w, 1, MAXDIM, &c->n_ff) || get_int(spec, "n_head", w, 1, 4096, &c->n_head) ||
        get_int(spec, "n_head_kv", w, 1, 4096, &c->n_head_kv) ||
        get_int(spec, "head_dim", w, 2, 4096, &c->head_dim) || get_int(spec, "n_layer", w, 1, 4096, &c->n_layer) ||
        get_int(spec, "ctx_size", w, 1, 1L << 24, &c->ctx_size) ||
        get_int(spec, "n_threads", w, 1, 256, &c->n_threads) || get_float(spec, "rms_eps", w, &c->rms_eps) ||
        get_float(spec, "rope_theta", w, &c->rope_theta) || get_bool(spec, "rope_neox", w, &c->rope_neox) ||
        get_bool(spec, "sub_norms", w, &c->sub_norms))
        return -1;
    c->n_seq = 1; /* optional: KV slots */
    if (PyDict_GetItemString(spec, "n_seq") && get_int(spec, "n_seq", w, 1, NB_MAX_SEQ, &c->n_seq)) return -1;
    if (c->n_head % c->n_head_kv != 0 || c->n_head / c->n_head_kv > NB_MAX_GQA) {
        PyErr_Format(PyExc_ValueError, "spec: n_head %d is not a multiple of n_head_kv %d (at most %d times)",
                     c->n_head, c->n_head_kv, NB_MAX_GQA);
        return -1;
    }
    if (c->head_dim % 2 != 0) {
        PyErr_Format(PyExc_ValueError, "spec: head_dim %d is odd", c->head_dim);
        return -1;
    }
    if (!(c->rms_eps >= 0.0f) || !(c->rope_theta > 0.0f)) {
        PyErr_SetString(PyExc_ValueError, "spec: rms_eps must be >= 0 and rope_theta > 0");
        return -1;
    }
    if ((c->act = get_choice(spec, "ffn_act", w, ACTS)) < 0) return -1;
    if ((c->head = get_choice(spec, "head", w, HEADS)) < 0) return -1;
    if ((c->tok_embd_type = get_choice(spec, "tok_embd_type", w, DTYPES)) < 0) return -1;
    static const char *const KV_TYPES[] = {"f32", "f16", NULL}; /* enum nb_dtype order */
    c->kv_type = NB_F32; /* optional: the KV cache's element type */
    if (PyDict_GetItemString(spec, "kv_cache") && (c->kv_type = get_choice(spec, "kv_cache", w, KV_TYPES)) < 0)
        return -1;
    size_t embd_bytes = (size_t)c->n_vocab * (size_t)c->n_embd * DTYPE_SIZE[c->tok_embd_type];
    PyObject *obj = get_item(spec, "tok_embd", w);
    if (!obj || !(c->tok_embd = take_buffer(bl, obj, "tok_embd", embd_bytes, embd_bytes))) return -1;
    PyObject *out = PyDict_GetItemString(spec, "output");
    if (out && out != Py_None) {
        if ((c->output_type = get_choice(spec, "output_type", w, DTYPES)) < 0) return -1;
        size_t nbytes = (size_t)c->n_vocab * (size_t)c->n_embd * DTYPE_SIZE[c->output_type];
        if (!(c->output = take_buffer(bl, out, "output", nbytes, nbytes))) return -1;
    } else {
        c->output = c->tok_embd;
        c->output_type = c->tok_embd_type;
    }
    PyObject *rel = PyDict_GetItemString(spec, "release_head_pages");
    if (rel && (c->release_head_pages = PyObject_IsTrue(rel)) < 0) return -1;
    if (c->release_head_pages && c->head == NB_HEAD_EXACT) c->release_head_pages = 0; /* read whole each token */
    c->head_fd = -1;
    PyObject *fd = PyDict_GetItemString(spec, "head_fd");
    if (fd && fd != Py_None) {
        long long off = 0;
        PyObject *o = PyDict_GetItemString(spec, "head_offset");
        if (!PyLong_Check(fd) || !o || !PyLong_Check(o) || (c->head_fd = (int)PyLong_AsLong(fd)) < 0 ||
            (off = PyLong_AsLongLong(o)) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "spec: head_fd and head_offset must be non-negative ints");
            return -1;
        }
        c->head_offset = off;
    }
    if (get_f32_vector(bl, spec, "output_norm", w, c->n_embd, &c->output_norm)) return -1;
    PyObject *layers = get_item(spec, "layers", w);
    if (!layers) return -1;
    if (!PyList_Check(layers) || PyList_GET_SIZE(layers) != c->n_layer) {
        PyErr_Format(PyExc_ValueError, "spec: 'layers' must be a list of n_layer = %d dicts", c->n_layer);
        return -1;
    }
    nb_layer *L = PyMem_Calloc((size_t)c->n_layer, sizeof(nb_layer));
    if (!L) {
        PyErr_NoMemory();
        return -1;
    }
    *layers_out = L;
    for (int il = 0; il < c->n_layer; il++)
        if (parse_layer(bl, PyList_GET_ITEM(layers, il), il, c, &L[il])) return -1;
    c->layers = L;
    c->head_codes = NULL;
    c->head_scales = NULL;
    PyObject *codes = PyDict_GetItemString(spec, "head_codes");
    if (codes && codes != Py_None) {
        size_t cb, sb;
        nb_head_copy_sizes(c, &cb, &sb);
        PyObject *scales = get_item(spec, "head_scales", w);
        if (!scales) return -1;
        if (cb == 0) {
            PyErr_SetString(PyExc_ValueError, "spec: head_codes given for the exact head");
            return -1;
        }
        if (!(c->head_codes = take_buffer(bl, codes, "head_codes", cb, cb)) ||
            !(c->head_scales = take_buffer(bl, scales, "head_scales", sb, sb)))
            return -1;
    }
    return 0;
}
