/* The forward pass (W1.58A8 BitNet, as Hugging Face BitNetForCausalLM computes it). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "model_internal.h"
#include "simd.h"

/* Per-row float math (kernels.h): RMS norm and the per-token absmax int8 quantization. */
static inline void rmsnorm(nb_model *m, float *out, const float *x, const float *w, int n) {
    m->k->rmsnorm(out, x, w, n, m->cfg.rms_eps);
}

static inline void quantize_row(nb_model *m, const float *v, int n, int8_t *q, int32_t *qsum, float *s) {
    m->k->quantize(v, n, q, qsum, s);
}

/* ---- parallel helpers ---- */

typedef void (*token_op)(nb_model *m, int t, int ith);

typedef struct {
    nb_model *m;
    token_op op;
    int n;
    atomic_int next;
} token_job;

static void token_task(void *arg, int ith, int nth) {
    (void)nth;
    token_job *job = arg;
    for (int t; (t = atomic_fetch_add(&job->next, 1)) < job->n;) job->op(job->m, t, ith);
}

/* Runs op for tokens 0..n-1, in parallel when there are several. */
static void run_tokens(nb_model *m, token_op op, int n) {
    if (n == 1 || nb_pool_size(m->pool) == 1) {
        for (int t = 0; t < n; t++) op(m, t, 0);
        return;
    }
    token_job job = {.m = m, .op = op, .n = n};
    atomic_init(&job.next, 0);
    nb_pool_run(m->pool, token_task, &job);
}

typedef struct {
    const nb_tmat *w;
    float *y;
    int accumulate;
    int chunk0; /* first chunk index of this matrix */
    float fac[NB_UBATCH];
} mm_part;

typedef struct {
    nb_model *m;
    int nparts, ntok, chunk_rows, total;
    mm_part parts[3];
    atomic_int next;
} mm_job;

static void mm_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    mm_job *job = arg;
    nb_model *m = job->m;
    for (int c; (c = atomic_fetch_add(&job->next, 1)) < job->total;) {
        int p = job->nparts - 1;
        while (c < job->parts[p].chunk0) p--;
        const mm_part *part = &job->parts[p];
        const nb_tmat *w = part->w;
        int r0 = (c - part->chunk0) * job->chunk_rows;
        int r1 = r0 + job->chunk_rows < w->rows ? r0 + job->chunk_rows : w->rows;
        m->k->ternary(w->data, w->cols, r0, r1, m->qa, m->qsum, part->fac, job->ntok, part->y,
                      w->rows, part->accumulate);
    }
}

/* Rows per work item: long contiguous weight streams (decode: the prefetch ahead stays useful;
 * prefill: a token tile's activations serve more rows before the next tile), but at least ~4
 * items per thread. In-process A/B runs on 2 threads: decode 256 rows against 128, +1 to +8%;
 * prefill 128 against 64, 32 and 16, +1 to +7% at each step. */
static int chunk_rows(const nb_model *m, int ntok, int total_rows) {
    const int cap = ntok == 1 ? 256 : 128;
    int rows = total_rows / (4 * nb_pool_size(m->pool)) / 16 * 16;
    return rows < 16 ? 16 : rows > cap ? cap : rows;
}

/* y_i (+)= W_i . qa for up to three matrices sharing the quantized input in m->qa. */
static void matmul(nb_model *m, int n, int nparts, const nb_tmat *const *w, float *const *y,
                   int accumulate) {
    int all_rows = 0;
    for (int p = 0; p < nparts; p++) all_rows += w[p]->rows;
    mm_job job = {.m = m, .nparts = nparts, .ntok = n, .chunk_rows = chunk_rows(m, n, all_rows)};
    atomic_init(&job.next, 0);
    int total = 0;
    for (int p = 0; p < nparts; p++) {
        mm_part *part = &job.parts[p];
        part->w = w[p];
        part->y = y[p];
        part->accumulate = accumulate;
        part->chunk0 = total;
        for (int t = 0; t < n; t++) part->fac[t] = w[p]->scale / m->qs[t];
        total += (w[p]->rows + job.chunk_rows - 1) / job.chunk_rows;
    }
    job.total = total;
    nb_pool_run(m->pool, mm_task, &job);
}

/* ---- the steps of a layer ---- */

static void op_attn_in(nb_model *m, int t, int ith) {
    (void)ith;
    const int E = m->cfg.n_embd;
    const float *x = m->x + (size_t)t * E;
    float *h = m->hn + (size_t)t * E;
    rmsnorm(m, h, x, m->layers[m->il].attn_norm, E);
    quantize_row(m, h, E, m->qa + (size_t)t * E, &m->qsum[t], &m->qs[t]);
}

static void op_ffn_in(nb_model *m, int t, int ith) {
    (void)ith;
    const int E = m->cfg.n_embd;
    const float *x = m->x + (size_t)t * E;
    float *h = m->hn + (size_t)t * E;
    rmsnorm(m, h, x, m->layers[m->il].ffn_norm, E);
    quantize_row(m, h, E, m->qa + (size_t)t * E, &m->qsum[t], &m->qs[t]);
}

static void rope(float *v, int nh, int hd, int neox, const float *c, const float *s) {
    const int half = hd / 2;
    for (int h = 0; h < nh; h++, v += hd) {
        for (int i = 0; i < half; i++) {
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float a = v[i0], b = v[i1];
            v[i0] = a * c[i] - b * s[i];
            v[i1] = a * s[i] + b * c[i];
        }
    }
}

static void op_rope_store(nb_model *m, int t, int ith) {
    (void)ith;
    const nb_config *cfg = &m->cfg;
    const int HD = cfg->head_dim, half = HD / 2, nkv = cfg->n_head_kv;
    const size_t D = (size_t)cfg->n_head * HD, KV = (size_t)nkv * HD;
    const float *c = m->rope_cos + (size_t)t * half, *s = m->rope_sin + (size_t)t * half;
    float *k = m->kb + t * KV;
    rope(m->qb + t * D, cfg->n_head, HD, cfg->rope_neox, c, s);
    rope(k, nkv, HD, cfg->rope_neox, c, s);
    const int pos = m->p0 + t;
    for (int g = 0; g < nkv; g++) {
        size_t off = (((size_t)m->il * nkv + g) * cfg->ctx_size + pos) * HD;
        memcpy(m->kcache + off, k + (size_t)g * HD, sizeof(float) * HD);
        memcpy(m->vcache + off, m->vb + t * KV + (size_t)g * HD, sizeof(float) * HD);
    }
}

typedef struct {
    nb_model *m;
    int total;
    atomic_int next;
} attn_job;

/* One token and one KV head: causal softmax attention of the G query heads that share it
 * (GQA) over positions 0..pos of the cache; each key and value row is read once for all G. */
static void attend(nb_model *m, int t, int g, int ith) {
    const nb_config *cfg = &m->cfg;
    const int HD = cfg->head_dim, npos = m->p0 + t + 1, G = cfg->n_head / cfg->n_head_kv;
    const size_t D = (size_t)cfg->n_head * HD;
    const size_t base = ((size_t)m->il * cfg->n_head_kv + g) * cfg->ctx_size * HD;
    const float *q = m->qb + t * D + (size_t)g * G * HD;
    float *out = m->attn + t * D + (size_t)g * G * HD;
    float *sc = m->scores + (size_t)ith * G * cfg->ctx_size;
    m->k->attn_scores(m->kcache + base, npos, HD, q, G, 1.0f / sqrtf((float)HD), sc, cfg->ctx_size);
    float inv[NB_MAX_GQA];
    for (int h = 0; h < G; h++) {
        float *s = sc + (size_t)h * cfg->ctx_size, mx = -INFINITY;
        for (int j = 0; j < npos; j++) mx = max_f(mx, s[j]);
        inv[h] = 1.0f / m->k->exp_sum(s, npos, mx);
    }
    m->k->attn_values(m->vcache + base, npos, HD, sc, G, cfg->ctx_size, out);
    for (int h = 0; h < G; h++)
        for (int i = 0; i < HD; i++) out[(size_t)h * HD + i] *= inv[h];
}

static void attn_task(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *job = arg;
    const int nkv = job->m->cfg.n_head_kv;
    for (int c; (c = atomic_fetch_add(&job->next, 1)) < job->total;) attend(job->m, c / nkv, c % nkv, ith);
}

static void op_attn_out(nb_model *m, int t, int ith) {
    (void)ith;
    const int D = m->cfg.n_head * m->cfg.head_dim;
    float *a = m->attn + (size_t)t * D;
    if (m->cfg.sub_norms) rmsnorm(m, a, a, m->layers[m->il].attn_sub_norm, D);
    quantize_row(m, a, D, m->qa + (size_t)t * D, &m->qsum[t], &m->qs[t]);
}

static void op_ffn_act(nb_model *m, int t, int ith) {
    (void)ith;
    const int F = m->cfg.n_ff;
    float *g = m->g + (size_t)t * F;
    const float *u = m->u + (size_t)t * F;
    if (m->cfg.act == NB_RELU2) {
        for (int i = 0; i < F; i++) {
            float r = g[i] > 0.0f ? g[i] : 0.0f;
            g[i] = (r * r) * u[i];
        }
    } else {
        for (int i = 0; i < F; i++) g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
    }
    if (m->cfg.sub_norms) rmsnorm(m, g, g, m->layers[m->il].ffn_sub_norm, F);
    const int Fp = nb_padded_cols(F); /* ffn_down's row length */
    int8_t *qa = m->qa + (size_t)t * Fp;
    quantize_row(m, g, F, qa, &m->qsum[t], &m->qs[t]);
    memset(qa + F, 0, (size_t)(Fp - F));
}

static void layer(nb_model *m, int il, int n) {
    const nb_layer *L = &m->layers[il];
    m->il = il;
    run_tokens(m, op_attn_in, n);
    const nb_tmat *qkv[3] = {&L->q, &L->k, &L->v};
    float *qkv_out[3] = {m->qb, m->kb, m->vb};
    matmul(m, n, 3, qkv, qkv_out, 0);
    run_tokens(m, op_rope_store, n);
    attn_job aj = {.m = m, .total = n * m->cfg.n_head_kv};
    atomic_init(&aj.next, 0);
    nb_pool_run(m->pool, attn_task, &aj);
    run_tokens(m, op_attn_out, n);
    const nb_tmat *o[1] = {&L->o};
    float *x_out[1] = {m->x};
    matmul(m, n, 1, o, x_out, 1);
    run_tokens(m, op_ffn_in, n);
    const nb_tmat *gu[2] = {&L->gate, &L->up};
    float *gu_out[2] = {m->g, m->u};
    matmul(m, n, 2, gu, gu_out, 0);
    run_tokens(m, op_ffn_act, n);
    const nb_tmat *down[1] = {&L->down};
    matmul(m, n, 1, down, x_out, 1);
}

static void embed(nb_model *m, const int32_t *tokens, int n) {
    const nb_config *cfg = &m->cfg;
    const size_t E = cfg->n_embd, esz = cfg->tok_embd_type == NB_F32 ? 4 : 2;
    const int tied = cfg->tok_embd == cfg->output; /* then rows can come from the head's file */
    for (int t = 0; t < n; t++) {
        const void *row = tied ? nb_head_row(m, tokens[t]) : (const char *)cfg->tok_embd + (size_t)tokens[t] * E * esz;
        m->k->to_f32(m->x + t * E, row, cfg->tok_embd_type, (int)E);
    }
}

static void rope_tables(nb_model *m, int n) {
    const int half = m->cfg.head_dim / 2;
    for (int t = 0; t < n; t++) {
        const double pos = (double)(m->p0 + t);
        for (int i = 0; i < half; i++) {
            double a = pos * m->rope_freq[i];
            m->rope_cos[(size_t)t * half + i] = (float)cos(a);
            m->rope_sin[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

/* ---- the head ---- */

typedef struct {
    nb_model *m;
    int ntok;
    int exact; /* every row from the float values, whatever the model's head */
    float *logits;
    atomic_int next;
} head_job;

#define HEAD_CHUNK 256 /* rows per claim: longer streams, as for the matmuls (+2% decode against 64) */

static void head_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    head_job *job = arg;
    nb_model *m = job->m;
    const int E = m->cfg.n_embd, V = m->cfg.n_vocab;
    const size_t esz = m->cfg.output_type == NB_F32 ? 4 : 2;
    for (;;) {
        int r0 = atomic_fetch_add(&job->next, HEAD_CHUNK);
        if (r0 >= V) break;
        int r1 = r0 + HEAD_CHUNK < V ? r0 + HEAD_CHUNK : V;
        for (int r = r0; r < r1; r++) {
            for (int t = 0; t < job->ntok; t++) {
                float *dst = &job->logits[(size_t)t * V + r];
                if (job->exact) {
                    const char *row = (const char *)m->cfg.output + (size_t)r * E * esz;
                    *dst = m->k->dot_row(m->hn + (size_t)t * E, row, m->cfg.output_type, E);
                } else if (m->head_q4) {
                    const int G = E / 128;
                    *dst = m->k->dot_q4(m->head_q4 + (size_t)r * (E / 2), m->head_scale + (size_t)r * G,
                                        m->qa + (size_t)t * E, m->head_gsum + (size_t)t * G, E) / m->qs[t];
                } else { /* q8 */
                    int32_t d = m->k->dot_i8(m->qa + (size_t)t * E, m->head_q + (size_t)r * E, E);
                    *dst = (float)d * (m->head_scale[r] / m->qs[t]);
                }
            }
        }
    }
}

/* A quantized head ranks the vocabulary; its NB_RESCORE best candidates are then recomputed
 * from the float rows. Sampling only ever keeps the top of the distribution (top-k 40 by
 * default, min-p, top-p), and greedy decoding only the first: those see exact logits whenever
 * the quantized ranking puts the true candidates within its best 128. With 64, a 4-bit head
 * on very flat distributions (random weights) swapped members of the top 40 at about half of
 * the positions; with 128 it did not (benchmarks/head_accuracy.py). The rest of the
 * vocabulary keeps the quantized values. */
#define NB_RESCORE 128

/* Indices of the k largest values of x[0..n) (k <= NB_RESCORE, any order): a min-heap of the
 * best so far, whose root is the value to beat. */
static int top_k_indices(const float *x, int n, int k, int *idx) {
    float val[NB_RESCORE];
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        if (cnt == k && (i & 15) == 0 && i + 16 <= n) {
            /* Once the heap is full almost nothing beats its root: skip whole blocks of 16
             * (a max the compiler vectorizes) and look closer only where one might. */
            float bmax = x[i];
            for (int j = 1; j < 16; j++) bmax = max_f(bmax, x[i + j]);
            if (!(bmax > val[0])) {
                i += 15;
                continue;
            }
        }
        const float v = x[i];
        int j;
        if (cnt < k) { /* sift up */
            for (j = cnt++; j > 0 && val[(j - 1) / 2] > v; j = (j - 1) / 2) {
                val[j] = val[(j - 1) / 2];
                idx[j] = idx[(j - 1) / 2];
            }
        } else if (v > val[0]) { /* replace the root, sift down */
            for (j = 0;;) {
                int c = 2 * j + 1;
                if (c >= k) break;
                if (c + 1 < k && val[c + 1] < val[c]) c++;
                if (val[c] >= v) break;
                val[j] = val[c];
                idx[j] = idx[c];
                j = c;
            }
        } else {
            continue;
        }
        val[j] = v;
        idx[j] = i;
    }
    return cnt;
}

static void rescore_best(nb_model *m, int ntok, float *logits) {
    const int E = m->cfg.n_embd, V = m->cfg.n_vocab;
    int idx[NB_RESCORE];
    for (int t = 0; t < ntok; t++) {
        float *lt = logits + (size_t)t * V;
        const int n = top_k_indices(lt, V, V < NB_RESCORE ? V : NB_RESCORE, idx);
        for (int i = 0; i < n; i++)
            lt[idx[i]] = m->k->dot_row(m->hn + (size_t)t * E, nb_head_row(m, idx[i]), m->cfg.output_type, E);
    }
}

/* Logits of batch tokens t0..t0+ntok-1 into logits[0 .. ntok*n_vocab); exact: from the float
 * rows only. */
static void head(nb_model *m, int t0, int ntok, float *logits, int exact) {
    exact = exact || m->cfg.head == NB_HEAD_EXACT;
    const int E = m->cfg.n_embd;
    for (int t = 0; t < ntok; t++) {
        float *h = m->hn + (size_t)t * E;
        rmsnorm(m, h, m->x + (size_t)(t0 + t) * E, m->cfg.output_norm, E);
        if (exact) continue;
        int8_t *q = m->qa + (size_t)t * E;
        quantize_row(m, h, E, q, &m->qsum[t], &m->qs[t]);
        if (m->cfg.head == NB_HEAD_Q4)
            for (int g = 0; g < E / 128; g++) {
                int32_t sum = 0;
                for (int i = 0; i < 128; i++) sum += q[g * 128 + i];
                m->head_gsum[(size_t)t * (E / 128) + g] = sum;
            }
    }
    head_job job = {.m = m, .ntok = ntok, .exact = exact, .logits = logits};
    atomic_init(&job.next, 0);
    nb_pool_run(m->pool, head_task, &job);
    if (!exact) rescore_best(m, ntok, logits);
}

int nb_model_forward(nb_model *m, const int32_t *tokens, int n, int n_past, float *logits,
                     int all_logits, int exact_head) {
    if (atomic_exchange(&m->busy, 1)) return -1;
    const size_t V = m->cfg.n_vocab;
    for (int b = 0; b < n; b += NB_UBATCH) {
        int nb = n - b < NB_UBATCH ? n - b : NB_UBATCH;
        m->p0 = n_past + b;
        embed(m, tokens + b, nb);
        rope_tables(m, nb);
        for (int il = 0; il < m->cfg.n_layer; il++) layer(m, il, nb);
        if (all_logits)
            head(m, 0, nb, logits + (size_t)b * V, exact_head);
        else if (b + nb == n)
            head(m, nb - 1, 1, logits, exact_head);
    }
    atomic_store(&m->busy, 0);
    return 0;
}
