/* State of a model shared by model.c (construction) and forward.c (the forward pass). */
#ifndef NB_MODEL_INTERNAL_H
#define NB_MODEL_INTERNAL_H

#include "model.h"

struct nb_model {
    nb_config cfg;
    nb_layer *layers; /* own copy of the layer table */
    const nb_kernels *k;
    nb_pool *pool;
    atomic_int busy;
    /* KV cache, cfg.kv_type elements (f32, or f16 at half the memory and bandwidth),
     * [slot][layer][kv_head][ctx_size][head_dim] (kv_offset, forward.c); calloc'd so untouched
     * pages (slots not used yet) stay free. */
    void *kcache, *vcache;
    /* Quantized head copies (NULL for the exact head):
     *   q8: head_q, n_vocab x n_embd int8, one head_scale per row;
     *   q4: head_q4, n_vocab x n_embd/2 bytes, one head_scale per 128-weight group (layout in
     *       kernels.h, dot_q4). */
    int8_t *head_q;
    uint8_t *head_q4;
    float *head_scale;
    int head_borrowed; /* head_q/head_q4/head_scale point into the caller's buffers (cfg.head_codes) */
    int32_t *head_gsum; /* q4: per token, the sums of its int8 activations per 128-group */
    void *row_buf;      /* per thread: one head row read with pread (head_fd) */
    double *rope_freq; /* head_dim / 2 */
    /* Scratch for NB_UBATCH tokens. */
    float *x, *qb, *kb, *vb, *attn, *g, *u, *hn;
    int8_t *qa;
    int8_t *qa_pk; /* qa as the kernels' ternary_pack lays it out (NULL when they have none) */
    int32_t *qsum;
    float *qs;
    float *rope_cos, *rope_sin;
    float *attn_scratch; /* n_threads x nb_attn_scratch_floats: each thread's attention state */
    float *attn_split;   /* nb_attn_split_floats: partial results of a decode split by positions */
};

/* Floats of attention scratch per thread, and of the split decode's partial results (forward.c). */
size_t nb_attn_scratch_floats(const nb_config *c);
size_t nb_attn_split_floats(const nb_config *c);

/* Row r of the head (the file's float values): read from head_fd when there is one, else
 * through the mapping. Pool thread ith's (the result may be its part of m->row_buf). */
const void *nb_head_row(const nb_model *m, int r, int ith);

#endif
