/* Python module `neuro_bitnet.engine._core`: cpu_features and the Model type. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stddef.h>
#include <string.h>

#include "cpu.h"
#include "gguf_strings.h"
#include "model.h"
#include "spec.h"

/* ---- Model type ---- */

typedef struct {
    PyObject_HEAD
    nb_model *m;
    buffer_list bufs;
    int n_vocab, ctx_size, n_threads, n_seq;
} ModelObject;

static int model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"spec", "isa", NULL};
    PyObject *spec;
    const char *isa = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$s:Model", kwlist, &spec, &isa)) return -1;
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialized");
        return -1;
    }
    const char *err = "unknown error";
    const nb_kernels *k = nb_kernels_select(isa, &err);
    if (!k) {
        PyErr_Format(PyExc_ValueError, "isa '%s': %s", isa, err);
        return -1;
    }
    nb_config cfg;
    nb_layer *layers = NULL;
    if (parse_spec(spec, &self->bufs, &cfg, &layers)) {
        PyMem_Free(layers);
        buffers_release(&self->bufs);
        return -1;
    }
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
    self->n_seq = cfg.n_seq;
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
    static char *kwlist[] = {"tokens", "n_past", "logits", "all_logits", "exact_head", NULL};
    PyObject *tok_obj, *log_obj;
    int n_past, all_logits = 0, exact_head = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiO|pp:forward", kwlist, &tok_obj, &n_past, &log_obj,
                                     &all_logits, &exact_head))
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
        rc = nb_model_forward(self->m, tokens, (int)n, n_past, lb.buf, all_logits, exact_head);
        Py_END_ALLOW_THREADS
        if (rc != 0) PyErr_SetString(PyExc_RuntimeError, "this Model is running a forward pass in another thread");
    }
    PyBuffer_Release(&tb);
    PyBuffer_Release(&lb);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* 0 if forward_batch's arguments are valid, else -1 with ValueError set. */
static int check_batch_args(ModelObject *self, Py_buffer *b, Py_ssize_t n, Py_ssize_t nrows) {
    const int32_t *tok = b[0].buf, *slot = b[1].buf, *pos = b[2].buf, *rows = b[3].buf;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "tokens is empty");
        return -1;
    }
    if (b[1].len / 4 != n || b[2].len / 4 != n) {
        PyErr_SetString(PyExc_ValueError, "tokens, slots and positions must have the same length");
        return -1;
    }
    if (b[4].len / 4 != nrows * (Py_ssize_t)self->n_vocab) {
        PyErr_Format(PyExc_ValueError, "logits holds %zd floats, expected %zd", b[4].len / 4,
                     nrows * (Py_ssize_t)self->n_vocab);
        return -1;
    }
    int next[NB_MAX_SEQ]; /* per slot: the position its next token must have, -1 before the first */
    for (int s = 0; s < self->n_seq; s++) next[s] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (tok[i] < 0 || tok[i] >= self->n_vocab) {
            PyErr_Format(PyExc_ValueError, "token id %d at index %zd is out of range [0, %d)", tok[i], i,
                         self->n_vocab);
            return -1;
        }
        if (slot[i] < 0 || slot[i] >= self->n_seq) {
            PyErr_Format(PyExc_ValueError, "slot %d at index %zd is out of range [0, %d)", slot[i], i, self->n_seq);
            return -1;
        }
        if (pos[i] < 0 || pos[i] >= self->ctx_size) {
            PyErr_Format(PyExc_ValueError, "position %d at index %zd does not fit ctx_size %d", pos[i], i,
                         self->ctx_size);
            return -1;
        }
        if (next[slot[i]] >= 0 && pos[i] != next[slot[i]]) {
            PyErr_Format(PyExc_ValueError, "slot %d: position %d at index %zd, expected %d (the tokens of a slot "
                         "come at consecutive positions)", slot[i], pos[i], i, next[slot[i]]);
            return -1;
        }
        next[slot[i]] = pos[i] + 1;
    }
    for (Py_ssize_t r = 0; r < nrows; r++)
        if (rows[r] < 0 || rows[r] >= n || (r > 0 && rows[r] <= rows[r - 1])) {
            PyErr_SetString(PyExc_ValueError, "logit_rows must be strictly increasing token indices");
            return -1;
        }
    return 0;
}

static PyObject *model_forward_batch(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tokens", "slots", "positions", "logit_rows", "logits", "exact_head", NULL};
    static const char *const what[5] = {"tokens", "slots", "positions", "logit_rows", "logits"};
    PyObject *obj[5];
    int exact_head = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|p:forward_batch", kwlist, &obj[0], &obj[1], &obj[2],
                                     &obj[3], &obj[4], &exact_head))
        return NULL;
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialized");
        return NULL;
    }
    Py_buffer b[5];
    int got = 0;
    for (; got < 5; got++) {
        const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got == 4 ? PyBUF_WRITABLE : 0);
        int bad = PyObject_GetBuffer(obj[got], &b[got], flags) != 0;
        if (bad)
            PyErr_Clear();
        else if ((bad = !format_is(&b[got], got == 4 ? "f" : "il")))
            PyBuffer_Release(&b[got]);
        if (bad) {
            PyErr_Format(PyExc_ValueError, "%s must be a contiguous %s buffer", what[got],
                         got == 4 ? "writable float32" : "int32");
            break;
        }
    }
    if (got == 5) {
        const Py_ssize_t n = b[0].len / 4, nrows = b[3].len / 4;
        if (check_batch_args(self, b, n, nrows) == 0) {
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = nb_model_forward_batch(self->m, b[0].buf, b[1].buf, b[2].buf, (int)n, b[3].buf, (int)nrows,
                                        b[4].buf, exact_head);
            Py_END_ALLOW_THREADS
            if (rc != 0)
                PyErr_SetString(PyExc_RuntimeError, "this Model is running a forward pass in another thread");
        }
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *model_get_isa(ModelObject *self, void *closure) {
    (void)closure;
    if (!self->m) Py_RETURN_NONE;
    return PyUnicode_FromString(nb_model_isa(self->m));
}

static PyObject *model_head_copy(ModelObject *self, PyObject *noargs) {
    (void)noargs;
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialized");
        return NULL;
    }
    const void *codes;
    const float *scales;
    size_t cb, sb;
    nb_model_head_copy(self->m, &codes, &cb, &scales, &sb);
    if (cb == 0) Py_RETURN_NONE;
    return Py_BuildValue("(y#y#)", (const char *)codes, (Py_ssize_t)cb, (const char *)scales, (Py_ssize_t)sb);
}

static PyMemberDef model_members[] = {
    {"n_vocab", T_INT, offsetof(ModelObject, n_vocab), READONLY, "Vocabulary size."},
    {"ctx_size", T_INT, offsetof(ModelObject, ctx_size), READONLY, "KV cache length in tokens."},
    {"n_threads", T_INT, offsetof(ModelObject, n_threads), READONLY, "Compute threads (caller included)."},
    {"n_seq", T_INT, offsetof(ModelObject, n_seq), READONLY, "KV slots (sequences run together), ctx_size positions each."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"isa", (getter)model_get_isa, NULL, "Kernels this model runs: 'amx', 'avx512vnni', 'avx2' or 'portable'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef model_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, n_past, logits, all_logits=False, exact_head=False): run int32 tokens at "
     "positions n_past.., write float32 logits (last token, or every token when all_logits); "
     "exact_head: every logit from the head's float rows, whatever the model's head, and the pass's keys/values kept in f32, whatever kv_cache (a sequence must not mix exact and other passes)."},
    {"forward_batch", (PyCFunction)(void (*)(void))model_forward_batch, METH_VARARGS | METH_KEYWORDS,
     "forward_batch(tokens, slots, positions, logit_rows, logits, exact_head=False): run int32 tokens "
     "of several sequences together, token i at positions[i] of KV slot slots[i] (a slot's tokens at "
     "consecutive positions, in order); write the float32 logits of the tokens logit_rows (strictly "
     "increasing int32 indices) into logits (len(logit_rows) x n_vocab). forward() is this on slot 0."},
    {"head_copy", (PyCFunction)model_head_copy, METH_NOARGS,
     "head_copy(): (codes, scales) bytes of the quantized head, to pass back later as the spec's\n"
     "head_codes and head_scales (which skip building it); None for the exact head."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "neuro_bitnet.engine._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(spec, *, isa='auto'): a BitNet b1.58 model over caller-owned weight buffers\n"
              "(zero copy). isa picks the kernels: 'auto' (the best this CPU runs), 'amx', 'avx512vnni',\n"
              "'avx2' or 'portable' (plain C); one this CPU cannot run raises ValueError.\n\n"
              "spec keys: ints n_vocab, n_embd, n_ff, n_head, n_head_kv, head_dim, n_layer, ctx_size,\n"
              "n_threads (optional n_seq: KV slots, 1 by default); floats rms_eps, rope_theta; bools rope_neox, sub_norms; ffn_act 'relu2'|'silu';\n"
              "head 'exact'|'q8'|'q4'; optional kv_cache 'f32' (default)|'f16'; tok_embd (n_vocab x n_embd) with tok_embd_type 'f32'|'f16'|'bf16';\n"
              "optional output + output_type (untied head); optional release_head_pages (the head is a\n"
              "read-only file mapping whose pages the core may drop) and head_fd + head_offset (where\n"
              "its rows can be read with pread); optional head_codes + head_scales (a quantized head\n"
              "from head_copy(), used in place instead of built); output_norm f32 [n_embd]; layers: list of\n"
              "dicts with f32 attn_norm, ffn_norm (+ attn_sub_norm, ffn_sub_norm when sub_norms) and\n"
              "I2_S matrices attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down as\n"
              "{'data': buffer of rows*cols/4 bytes (+32 trailer allowed), 'scale', 'rows', 'cols'}.\n"
              "Buffers should be 32-byte aligned for speed. Bad specs raise ValueError.",
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
    return Py_BuildValue("{s:O,s:O,s:O,s:O,s:O}",
                         "avx2", cpu_has_avx2() ? Py_True : Py_False,
                         "fma", cpu_has_fma() ? Py_True : Py_False,
                         "f16c", cpu_has_f16c() ? Py_True : Py_False,
                         "avx512vnni", cpu_has_avx512vnni() ? Py_True : Py_False,
                         "amx", cpu_has_amx() ? Py_True : Py_False);
}

static PyMethodDef core_methods[] = {
    {"cpu_features", py_cpu_features, METH_NOARGS, "CPU features the kernels can dispatch on."},
    {"read_gguf_strings", nb_read_gguf_strings, METH_VARARGS,
     "read_gguf_strings(buffer, offset, count, max_bytes) -> (list, end, status): a GGUF array of\n"
     "count length-prefixed UTF-8 strings; status 0 (all read), 1 (truncated), 2 (a length above\n"
     "max_bytes) or 3 (not UTF-8), end then the offset of the bad entry."},
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
