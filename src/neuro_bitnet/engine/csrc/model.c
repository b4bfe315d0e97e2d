/* Model construction: validation of the C config, buffers, thread pool and the quantized head. */
#define _DEFAULT_SOURCE /* madvise */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "simd.h"

#if defined(__unix__) || defined(__APPLE__)
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

static void *alloc_aligned(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, (n + 63) / 64 * 64) != 0) return NULL;
    return p;
}

/* Row of the q8 head: scale = max|row| / 127, q = round(w / scale). */
static void quantize_row_q8(const float *row, int n, int8_t *q, float *scale_out) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fabsf(row[i]) > amax ? fabsf(row[i]) : amax;
    const float scale = amax / 127.0f;
    for (int i = 0; i < n; i++) {
        float v = scale > 0.0f ? round_even(row[i] / scale) : 0.0f;
        v = v > 127.0f ? 127.0f : v;
        v = v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)v;
    }
    *scale_out = scale;
}

/* Row of the q4 head, per 128-weight group (as ggml's Q4_0 picks its scale): the value of
 * largest magnitude m maps to -8, so scale = m / -8 and q = clamp(round(w / scale), -8, 7),
 * stored as q + 8. Bytes j of a group's two 32-byte halves hold weights j | 32 + j (first half)
 * and 64 + j | 96 + j (second half), low nibble first. */
static void quantize_row_q4(const float *row, int n, uint8_t *packed, float *scales) {
    for (int g = 0; g < n / 128; g++) {
        const float *w = row + (size_t)g * 128;
        float m = 0.0f;
        for (int i = 0; i < 128; i++) m = fabsf(w[i]) > fabsf(m) ? w[i] : m;
        const float scale = m / -8.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
        uint8_t code[128];
        for (int i = 0; i < 128; i++) {
            float v = round_even(w[i] * inv);
            v = v > 7.0f ? 7.0f : v;
            v = v < -8.0f ? -8.0f : v;
            code[i] = (uint8_t)((int)v + 8);
        }
        uint8_t *p = packed + (size_t)g * 64;
        for (int j = 0; j < 32; j++) {
            p[j] = (uint8_t)(code[j] | code[32 + j] << 4);
            p[32 + j] = (uint8_t)(code[64 + j] | code[96 + j] << 4);
        }
        scales[g] = scale;
    }
}

typedef struct {
    nb_model *m;
    atomic_int next;
} quant_job;

#define QUANT_CHUNK 256

/* Builds the quantized head copy from the file's float rows, rows split across the threads. */
static void quant_task(void *arg, int ith, int nth) {
    (void)nth;
    quant_job *job = arg;
    nb_model *m = job->m;
    const int E = m->cfg.n_embd, V = m->cfg.n_vocab, dt = m->cfg.output_type;
    const size_t esz = dt == NB_F32 ? 4 : 2;
    float *row = m->hn + (size_t)ith * E; /* one scratch row per thread */
    for (;;) {
        int r0 = nb_claim(&job->next, QUANT_CHUNK);
        if (r0 >= V) break;
        int r1 = r0 + QUANT_CHUNK < V ? r0 + QUANT_CHUNK : V;
        for (int r = r0; r < r1; r++) {
            m->k->to_f32(row, (const char *)m->cfg.output + (size_t)r * E * esz, dt, E);
            if (m->cfg.head == NB_HEAD_Q8)
                quantize_row_q8(row, E, m->head_q + (size_t)r * E, &m->head_scale[r]);
            else
                quantize_row_q4(row, E, m->head_q4 + (size_t)r * (E / 2),
                                m->head_scale + (size_t)r * (E / 128));
        }
        /* the float rows are read once here: keep them from piling up in resident memory */
        if (m->cfg.release_head_pages)
            nb_release_pages((const char *)m->cfg.output + (size_t)r0 * E * esz, (size_t)(r1 - r0) * E * esz);
    }
}

void nb_model_free(nb_model *m) {
    if (!m) return;
    nb_pool_destroy(m->pool);
    free(m->layers);
    free(m->kcache);
    free(m->vcache);
    if (!m->head_borrowed) {
        free(m->head_q);
        free(m->head_q4);
        free(m->head_scale);
    }
    free(m->head_gsum);
    free(m->row_buf);
    free(m->rope_freq);
    free(m->x);
    free(m->qb);
    free(m->kb);
    free(m->vb);
    free(m->attn);
    free(m->g);
    free(m->u);
    free(m->hn);
    free(m->qa);
    free(m->qa_pk);
    free(m->qsum);
    free(m->qs);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->attn_scratch);
    free(m->attn_split);
    free(m);
}

const char *nb_model_isa(const nb_model *m) { return m->k->name; }

void nb_head_copy_sizes(const nb_config *c, size_t *codes_bytes, size_t *scales_bytes) {
    const size_t V = (size_t)c->n_vocab, E = (size_t)c->n_embd;
    *codes_bytes = c->head == NB_HEAD_Q8 ? V * E : c->head == NB_HEAD_Q4 ? V * E / 2 : 0;
    *scales_bytes = c->head == NB_HEAD_Q8 ? V * 4 : c->head == NB_HEAD_Q4 ? V * (E / 128) * 4 : 0;
}

void nb_model_head_copy(const nb_model *m, const void **codes, size_t *codes_bytes,
                        const float **scales, size_t *scales_bytes) {
    nb_head_copy_sizes(&m->cfg, codes_bytes, scales_bytes);
    *codes = m->cfg.head == NB_HEAD_Q8 ? (const void *)m->head_q : (const void *)m->head_q4;
    *scales = m->head_scale;
}

const void *nb_head_row(const nb_model *m, int r, int ith) {
    const size_t bytes = (size_t)m->cfg.n_embd * (m->cfg.output_type == NB_F32 ? 4 : 2);
    const char *mapped = (const char *)m->cfg.output + (size_t)r * bytes;
#if defined(__unix__) || defined(__APPLE__)
    if (m->cfg.head_fd >= 0) {
        char *buf = (char *)m->row_buf + (size_t)ith * m->cfg.n_embd * 4;
        size_t got = 0;
        const off_t at = (off_t)m->cfg.head_offset + (off_t)r * (off_t)bytes;
        while (got < bytes) {
            ssize_t k = pread(m->cfg.head_fd, buf + got, bytes - got, at + (off_t)got);
            if (k <= 0 && !(k < 0 && errno == EINTR)) break;
            if (k > 0) got += (size_t)k;
        }
        if (got == bytes) return buf;
    }
#endif
    return mapped; /* no file, or it failed: the mapping holds the same bytes */
}

void nb_release_pages(const void *p, size_t n) {
#if defined(__unix__) || defined(__APPLE__)
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + n) / page * page;
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
#else
    (void)p;
    (void)n;
#endif
}

nb_model *nb_model_create(const nb_config *cfg, const nb_kernels *kernels, const char **err) {
    nb_model *m = calloc(1, sizeof(*m));
    if (!m) goto oom;
    m->cfg = *cfg;
    m->k = kernels;
    atomic_init(&m->busy, 0);
    const size_t UB = NB_UBATCH, E = cfg->n_embd, F = cfg->n_ff, HD = cfg->head_dim;
    const size_t D = (size_t)cfg->n_head * HD, KV = (size_t)cfg->n_head_kv * HD;
    size_t maxdim = E > (size_t)nb_padded_cols((int)F) ? E : (size_t)nb_padded_cols((int)F);
    if (D > maxdim) maxdim = D;

    m->layers = malloc(sizeof(nb_layer) * (size_t)cfg->n_layer);
    if (!m->layers) goto oom;
    memcpy(m->layers, cfg->layers, sizeof(nb_layer) * (size_t)cfg->n_layer);
    m->cfg.layers = m->layers;

    size_t kv_elems = (size_t)cfg->n_seq * cfg->n_layer * KV * (size_t)cfg->ctx_size;
    /* f32-sized whatever cfg.kv_type: exact passes keep keys and values in f32 (forward.c);
     * an f16 cache uses the first half, and pages never touched take no memory */
    m->kcache = calloc(kv_elems, sizeof(float));
    m->vcache = calloc(kv_elems, sizeof(float));
    m->rope_freq = malloc(sizeof(double) * (HD / 2));
    m->x = alloc_aligned(UB * E * 4);
    m->qb = alloc_aligned(UB * D * 4);
    m->kb = alloc_aligned(UB * KV * 4);
    m->vb = alloc_aligned(UB * KV * 4);
    m->attn = alloc_aligned(UB * D * 4);
    m->g = alloc_aligned(UB * F * 4);
    m->u = alloc_aligned(UB * F * 4);
    /* hn doubles as per-thread scratch while the quantized head is built */
    m->hn = alloc_aligned((UB > (size_t)cfg->n_threads ? UB : (size_t)cfg->n_threads) * E * 4);
    m->qa = alloc_aligned(UB * maxdim);
    if (kernels->ternary_pack && !(m->qa_pk = alloc_aligned(NB_TERNARY_PACK_BYTES(maxdim, UB)))) goto oom;
    m->qsum = alloc_aligned(UB * 4);
    m->qs = alloc_aligned(UB * 4);
    m->rope_cos = alloc_aligned(UB * (HD / 2) * 4);
    m->rope_sin = alloc_aligned(UB * (HD / 2) * 4);
    m->row_buf = alloc_aligned((size_t)cfg->n_threads * E * 4);
    m->attn_scratch = alloc_aligned((size_t)cfg->n_threads * nb_attn_scratch_floats(cfg) * 4);
    m->attn_split = alloc_aligned(nb_attn_split_floats(cfg) * 4);
    if (!m->kcache || !m->vcache || !m->rope_freq || !m->x || !m->qb || !m->kb || !m->vb ||
        !m->attn || !m->g || !m->u || !m->hn || !m->qa || !m->qsum || !m->qs || !m->rope_cos ||
        !m->rope_sin || !m->attn_scratch || !m->attn_split || !m->row_buf)
        goto oom;
    for (size_t i = 0; i < HD / 2; i++)
        m->rope_freq[i] = pow((double)cfg->rope_theta, -2.0 * (double)i / (double)HD);

    m->pool = nb_pool_create(cfg->n_threads);
    if (!m->pool) {
        *err = "could not start the worker threads";
        nb_model_free(m);
        return NULL;
    }
    if (cfg->head != NB_HEAD_EXACT && cfg->head_codes) { /* built earlier: used in place */
        m->head_borrowed = 1;
        if (cfg->head == NB_HEAD_Q8) m->head_q = (int8_t *)cfg->head_codes;
        else m->head_q4 = (uint8_t *)cfg->head_codes;
        m->head_scale = (float *)cfg->head_scales;
    } else if (cfg->head == NB_HEAD_Q8) {
        m->head_q = alloc_aligned((size_t)cfg->n_vocab * E);
        m->head_scale = alloc_aligned((size_t)cfg->n_vocab * 4);
        if (!m->head_q || !m->head_scale) goto oom;
    } else if (cfg->head == NB_HEAD_Q4) {
        m->head_q4 = alloc_aligned((size_t)cfg->n_vocab * E / 2);
        m->head_scale = alloc_aligned((size_t)cfg->n_vocab * (E / 128) * 4);
        if (!m->head_q4 || !m->head_scale) goto oom;
    }
    if (cfg->head == NB_HEAD_Q4) {
        m->head_gsum = alloc_aligned(UB * (E / 128) * 4);
        if (!m->head_gsum) goto oom;
    }
    if (cfg->head != NB_HEAD_EXACT && !cfg->head_codes) {
        quant_job job = {.m = m};
        atomic_init(&job.next, 0);
        nb_pool_run(m->pool, quant_task, &job);
        if (cfg->release_head_pages) nb_release_pages(cfg->output, nb_head_bytes(cfg));
    }
    return m;
oom:
    *err = "out of memory";
    nb_model_free(m);
    return NULL;
}
