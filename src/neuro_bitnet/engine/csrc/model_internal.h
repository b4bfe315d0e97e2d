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
    /* KV cache, f32 (as the reference computes; f16 here moved logits by ~1% of their range),
     * [layer][kv_head][ctx_size][head_dim]; calloc'd so untouched pages stay free. */
    float *kcache, *vcache;
    /* int8 head (head "q8"): n_vocab x n_embd, one scale per row. */
    int8_t *head_q;
    float *head_scale;
    double *rope_freq; /* head_dim / 2 */
    /* Scratch for NB_UBATCH tokens. */
    float *x, *qb, *kb, *vb, *attn, *g, *u, *hn;
    int8_t *qa;
    int32_t *qsum;
    float *qs;
    float *rope_cos, *rope_sin;
    float *scores; /* n_threads x ctx_size */
    /* The step being run (read by the per-token tasks). */
    int il, p0;
};

#endif
