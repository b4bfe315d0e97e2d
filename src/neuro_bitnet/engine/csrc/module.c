/* Python module `neuro_bitnet.engine._core`: cpu_features, set_isa and the Model type. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stddef.h>

#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "model.h"

static int g_force_portable = 0;

/* ---- spec parsing ---- */

typedef struct {
    Py_buffer *items;
    int n, cap;
} buffer_list;

static void buffers_release(buffer_list *bl) {
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
        get_tmat(bl, layer, "ffn_down", where, E, F, &L->down))
        return -1;
    return 0;
}

/* Fills cfg (layers into *layers_out, PyMem) from the spec dict; buffers go to bl. */
static int parse_spec(PyObject *spec, buffer_list *bl, nb_config *c, nb_layer **layers_out) {
    const char *w = "spec";
    static const char *const ACTS[] = {"relu2", "silu", NULL};
    static const char *const HEADS[] = {"exact", "q8", NULL};
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
    if (c->n_head % c->n_head_kv != 0) {
        PyErr_Format(PyExc_ValueError, "spec: n_head %d is not a multiple of n_head_kv %d", c->n_head, c->n_head_kv);
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
    if ((c->head_q8 = get_choice(spec, "head", w, HEADS)) < 0) return -1;
    if ((c->tok_embd_type = get_choice(spec, "tok_embd_type", w, DTYPES)) < 0) return -1;
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
    return 0;
}

/* ---- Model type ---- */

typedef struct {
    PyObject_HEAD
    nb_model *m;
    buffer_list bufs;
    int n_vocab, ctx_size, n_threads;
} ModelObject;

static int model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"spec", NULL};
    PyObject *spec;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Model", kwlist, &spec)) return -1;
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialized");
        return -1;
    }
    nb_config cfg;
    nb_layer *layers = NULL;
    if (parse_spec(spec, &self->bufs, &cfg, &layers)) {
        PyMem_Free(layers);
        buffers_release(&self->bufs);
        return -1;
    }
    const char *env = getenv("NEURO_BITNET_ISA");
    int portable = g_force_portable || (env && strcmp(env, "portable") == 0);
    const nb_kernels *k = portable ? NULL : nb_kernels_avx2();
    if (!k) k = nb_kernels_portable();
    const char *err = "unknown error";
    nb_model *m;
    Py_BEGIN_ALLOW_THREADS
    m = nb_model_create(&cfg, k, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(layers);
    if (!m) {
        buffers_release(&self->bufs);
        PyErr_Format(PyExc_MemoryError, "cannot build the model: %s", err);
        return -1;
    }
    self->m = m;
    self->n_vocab = cfg.n_vocab;
    self->ctx_size = cfg.ctx_size;
    self->n_threads = cfg.n_threads;
    return 0;
}

static void model_dealloc(ModelObject *self) {
    if (self->m) {
        Py_BEGIN_ALLOW_THREADS
        nb_model_free(self->m);
        Py_END_ALLOW_THREADS
    }
    buffers_release(&self->bufs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int format_is(const Py_buffer *b, const char *letters) {
    if (b->itemsize != 4) return 0;
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return f[0] && !f[1] && strchr(letters, f[0]) != NULL;
}

/* 0 if forward's arguments are valid, else -1 with ValueError set. */
static int check_forward_args(ModelObject *self, const Py_buffer *tb, const Py_buffer *lb,
                              Py_ssize_t n, int n_past, int all_logits) {
    const int32_t *tokens = tb->buf;
    const Py_ssize_t want = (all_logits ? n : 1) * (Py_ssize_t)self->n_vocab;
    if (!format_is(tb, "il")) {
        PyErr_SetString(PyExc_ValueError, "tokens must be a contiguous int32 buffer");
    } else if (!format_is(lb, "f")) {
        PyErr_SetString(PyExc_ValueError, "logits must be a writable contiguous float32 buffer");
    } else if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "tokens is empty");
    } else if (n_past < 0 || n > self->ctx_size - (Py_ssize_t)n_past) {
        PyErr_Format(PyExc_ValueError, "n_past %d + %zd tokens does not fit ctx_size %d", n_past, n,
                     self->ctx_size);
    } else if (lb->len / 4 != want) {
        PyErr_Format(PyExc_ValueError, "logits holds %zd floats, expected %zd", lb->len / 4, want);
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            if (tokens[i] < 0 || tokens[i] >= self->n_vocab) {
                PyErr_Format(PyExc_ValueError, "token id %d at index %zd is out of range [0, %d)",
                             tokens[i], i, self->n_vocab);
                return -1;
            }
        return 0;
    }
    return -1;
}

static PyObject *model_forward(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tokens", "n_past", "logits", "all_logits", NULL};
    PyObject *tok_obj, *log_obj;
    int n_past, all_logits = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiO|p:forward", kwlist, &tok_obj, &n_past, &log_obj,
                                     &all_logits))
        return NULL;
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialized");
        return NULL;
    }
    Py_buffer tb, lb;
    if (PyObject_GetBuffer(tok_obj, &tb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "tokens must be a contiguous int32 buffer");
        return NULL;
    }
    if (PyObject_GetBuffer(log_obj, &lb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&tb);
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "logits must be a writable contiguous float32 buffer");
        return NULL;
    }
    const Py_ssize_t n = tb.len / 4;
    const int32_t *tokens = tb.buf;
    if (check_forward_args(self, &tb, &lb, n, n_past, all_logits) == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = nb_model_forward(self->m, tokens, (int)n, n_past, lb.buf, all_logits);
        Py_END_ALLOW_THREADS
        if (rc != 0) PyErr_SetString(PyExc_RuntimeError, "this Model is running a forward pass in another thread");
    }
    PyBuffer_Release(&tb);
    PyBuffer_Release(&lb);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *model_get_isa(ModelObject *self, void *closure) {
    (void)closure;
    if (!self->m) Py_RETURN_NONE;
    return PyUnicode_FromString(nb_model_isa(self->m));
}

static PyMemberDef model_members[] = {
    {"n_vocab", T_INT, offsetof(ModelObject, n_vocab), READONLY, "Vocabulary size."},
    {"ctx_size", T_INT, offsetof(ModelObject, ctx_size), READONLY, "KV cache length in tokens."},
    {"n_threads", T_INT, offsetof(ModelObject, n_threads), READONLY, "Compute threads (caller included)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"isa", (getter)model_get_isa, NULL, "Kernels this model runs: 'avx2' or 'portable'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef model_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, n_past, logits, all_logits=False): run int32 tokens at positions n_past.., "
     "write float32 logits (last token, or every token when all_logits)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "neuro_bitnet.engine._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A BitNet b1.58 model over caller-owned weight buffers (see the spec keys).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)model_init,
    .tp_dealloc = (destructor)model_dealloc,
    .tp_methods = model_methods,
    .tp_members = model_members,
    .tp_getset = model_getset,
};

/* ---- module functions ---- */

static PyObject *py_cpu_features(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return Py_BuildValue("{s:O,s:O,s:O,s:O}",
                         "avx2", cpu_has_avx2() ? Py_True : Py_False,
                         "fma", cpu_has_fma() ? Py_True : Py_False,
                         "f16c", cpu_has_f16c() ? Py_True : Py_False,
                         "neon", cpu_has_neon() ? Py_True : Py_False);
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg) {
    (void)self;
    const char *s = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (s && strcmp(s, "auto") == 0)
        g_force_portable = 0;
    else if (s && strcmp(s, "portable") == 0)
        g_force_portable = 1;
    else {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "set_isa: expected 'auto' or 'portable', got %R", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"cpu_features", py_cpu_features, METH_NOARGS, "CPU features the kernels can dispatch on."},
    {"set_isa", py_set_isa, METH_O,
     "set_isa('auto' | 'portable'): kernels for Models built afterwards ('portable' forces plain C)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core", "BitNet compute core (C).", -1, core_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&ModelType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&core_module);
    if (!mod) return NULL;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(mod, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
