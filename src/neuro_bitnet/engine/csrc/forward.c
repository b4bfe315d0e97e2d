/* The forward pass (W1.58A8 BitNet, as Hugging Face BitNetForCausalLM computes it). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fp16.h"
#include "model_internal.h"
#include "simd.h"

/* ---- parallel helpers (every job hands out its items with nb_claim, threadpool.h) ---- */

/* One step of the forward pass: a batch of tokens through one layer. Every task gets it as an
 * argument; nothing about the step rides on the model. */
typedef struct {
    nb_model *m;
    const nb_layer *L;
    int il;           /* the layer's index (for its part of the KV cache) */
    int n;            /* tokens in the batch */
    const int *pos;   /* position of each token in its sequence */
    const int *slot;  /* KV slot (sequence) of each token */
    int kv_type;      /* how this pass keeps keys and values: cfg.kv_type, or NB_F32 (exact passes) */
} nb_step;

/* Offset of the key (value) row of slot `slot`, layer il, KV head g, position pos in the cache:
 * each slot owns one contiguous ctx_size-token region, [slot][layer][kv_head][ctx_size][head_dim]. */
static inline size_t kv_offset(const nb_config *c, int slot, int il, int g, int pos) {
    return ((((size_t)slot * c->n_layer + il) * c->n_head_kv + g) * c->ctx_size + pos) * c->head_dim;
}

typedef void (*token_op)(const nb_step *s, const void *arg, int t);

typedef struct {
    const nb_step *s;
    token_op op;
    const void *arg;
    atomic_int next;
} token_job;

static void token_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    token_job *job = arg;
    for (int t; (t = nb_claim(&job->next, 1)) < job->s->n;)
        job->op(job->s, job->arg, t);
}

/* Runs op(s, arg, t) for the step's tokens, in parallel when there are several. */
static void run_tokens(const nb_step *s, token_op op, const void *arg) {
    if (s->n == 1 || nb_pool_size(s->m->pool) == 1) {
        for (int t = 0; t < s->n; t++) op(s, arg, t);
        return;
    }
    token_job job = {.s = s, .op = op, .arg = arg};
    atomic_init(&job.next, 0);
    nb_pool_run(s->m->pool, token_task, &job);
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
    const int8_t *pk; /* m->qa_pk when the kernels' pack step laid qa out, else NULL */
    mm_part parts[3];
    atomic_int next;
} mm_job;

static void mm_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    mm_job *job = arg;
    nb_model *m = job->m;
    for (int c; (c = nb_claim(&job->next, 1)) < job->total;) {
        int p = job->nparts - 1;
        while (c < job->parts[p].chunk0) p--;
        const mm_part *part = &job->parts[p];
        const nb_tmat *w = part->w;
        int r0 = (c - part->chunk0) * job->chunk_rows;
        int r1 = r0 + job->chunk_rows < w->rows ? r0 + job->chunk_rows : w->rows;
        m->k->ternary(w->data, w->cols, r0, r1, m->qa, job->pk, m->qsum, part->fac, job->ntok, part->y,
                      w->rows, part->accumulate);
    }
}

/* Rows per work item: long contiguous weight streams (decode: the prefetch ahead stays useful;
 * prefill: a token tile's activations serve more rows before the next tile), but at least ~4
 * items per thread. In-process A/B runs on 2 threads: decode 256 rows against 128, +1 to +8%;
 * prefill 128 against 64, 32 and 16, +1 to +7% at each step. Packed activations (the amx
 * set's tiles; its AMX tiles prefetch one 64-row block ahead within an item): 512 rows against
 * 128, 8-15% faster at 5, 8 and 64 tokens, 8-11% at 2-4 (benchmarks/ternary_stream.py). */
static int chunk_rows(const nb_model *m, int ntok, int packed, int total_rows) {
    const int cap = ntok == 1 ? 256 : packed ? 512 : 128;
    int rows = total_rows / (4 * nb_pool_size(m->pool)) / 16 * 16;
    return rows < 16 ? 16 : rows > cap ? cap : rows;
}

/* y_i (+)= W_i . qa for up to three matrices sharing the quantized input in m->qa. */
static void matmul(nb_model *m, int n, int nparts, const nb_tmat *const *w, float *const *y,
                   int accumulate) {
    int all_rows = 0;
    for (int p = 0; p < nparts; p++) all_rows += w[p]->rows;
    mm_job job = {.m = m, .nparts = nparts, .ntok = n};
    if (m->k->ternary_pack && m->k->ternary_pack(m->qa, w[0]->cols, n, m->qa_pk)) job.pk = m->qa_pk;
    job.chunk_rows = chunk_rows(m, n, job.pk != NULL, all_rows);
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

/* Row t of src (n floats a row) RMS-normed with w into dst (skipped when w is NULL; dst may be
 * src), then quantized to int8 into m->qa: the input of the next ternary matmul. */
typedef struct {
    const float *src;
    float *dst;
    const float *w;
    int n;
} norm_quantize_arg;

static void op_norm_quantize(const nb_step *s, const void *arg, int t) {
    const norm_quantize_arg *a = arg;
    nb_model *m = s->m;
    const size_t off = (size_t)t * a->n;
    if (a->w) m->k->rmsnorm(a->dst + off, a->src + off, a->w, a->n, m->cfg.rms_eps);
    m->k->quantize(a->dst + off, a->n, m->qa + off, &m->qsum[t], &m->qs[t]);
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

static inline size_t kv_esz(int kv_type) { return kv_type == NB_F32 ? 4 : 2; }

/* Stores n floats as one KV cache row of type kv_type (f16: round to nearest even, saturating;
 * one conversion for every kernel set, so their caches are identical). */
static void kv_store(int kv_type, void *cache, size_t off, const float *src, int n) {
    if (kv_type == NB_F32) {
        memcpy((float *)cache + off, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *dst = (uint16_t *)cache + off;
    for (int i = 0; i < n; i++) dst[i] = nb_f32_to_f16(src[i]);
}

static void op_rope_store(const nb_step *s, const void *arg, int t) {
    (void)arg;
    nb_model *m = s->m;
    const nb_config *cfg = &m->cfg;
    const int HD = cfg->head_dim, half = HD / 2, nkv = cfg->n_head_kv;
    const size_t D = (size_t)cfg->n_head * HD, KV = (size_t)nkv * HD;
    const float *c = m->rope_cos + (size_t)t * half, *sn = m->rope_sin + (size_t)t * half;
    float *k = m->kb + t * KV;
    rope(m->qb + t * D, cfg->n_head, HD, cfg->rope_neox, c, sn);
    rope(k, nkv, HD, cfg->rope_neox, c, sn);
    for (int g = 0; g < nkv; g++) {
        size_t off = kv_offset(cfg, s->slot[t], s->il, g, s->pos[t]);
        kv_store(s->kv_type, m->kcache, off, k + (size_t)g * HD, HD);
        kv_store(s->kv_type, m->vcache, off, m->vb + t * KV + (size_t)g * HD, HD);
    }
}

/* ---- attention ----
 *
 * Flash-style: the keys and values of a KV head are read in blocks of ATTN_BLOCK positions, and
 * every query that attends to a block (the G query heads of a token, times the tokens of a
 * prefill tile) is scored against it while it is in L1, keeping a running softmax state per
 * query: its max m, sum l and unnormalized output o. Blocks fold into segments of
 * attn_seg_blocks blocks, segments into the result, always in position order and with the same
 * arithmetic per query, whatever the batch, the tile or the thread that computes them: a
 * query's output does not depend on how the work was split (decode splits a long cache across
 * the threads by segments; test_core and test_batch check the results bit for bit). */
#define ATTN_BLOCK 64    /* positions per block: 64 x 128 f16 values = 16 KB of V */
#define ATTN_TILE_Q 32   /* queries per prefill tile (tokens x G) */
#define ATTN_SEGMENTS 16 /* at most this many segments per context: the split decode's pieces */
#define ATTN_SPLIT_TOK 4 /* batches of at most this many tokens split long caches by segments */
#define ATTN_RUNS 4      /* split decode: work items per thread */

static int attn_tile_tokens(const nb_config *c) {
    const int G = c->n_head / c->n_head_kv;
    return G >= ATTN_TILE_Q ? 1 : ATTN_TILE_Q / G;
}

static int attn_seg_blocks(const nb_config *c) {
    const int blocks = (c->ctx_size + ATTN_BLOCK - 1) / ATTN_BLOCK;
    return (blocks + ATTN_SEGMENTS - 1) / ATTN_SEGMENTS;
}

/* Running softmax states of nq queries: m[nq], l[nq], o[nq x hd]. */
typedef struct {
    float *m, *l, *o;
} attn_state;

static attn_state state_at(float *p, int nq, int hd) {
    return (attn_state){p, p + nq, p + 2 * nq};
}

static void state_init(attn_state st, int nq, int hd) {
    for (int h = 0; h < nq; h++) {
        st.m[h] = -INFINITY;
        st.l[h] = 0.0f;
    }
    memset(st.o, 0, sizeof(float) * (size_t)nq * hd);
}

/* st (+)= (m2, l2, o2) for queries [q0, q1): the softmax of both position sets together. */
static void state_merge(attn_state st, const float *m2, const float *l2, const float *o2, int q0, int q1, int hd) {
    for (int h = q0; h < q1; h++) {
        const float mx = max_f(st.m[h], m2[h]), a = expf(st.m[h] - mx), b = expf(m2[h] - mx);
        float *o = st.o + (size_t)h * hd;
        const float *o2h = o2 + (size_t)h * hd;
        for (int i = 0; i < hd; i++) o[i] = a * o[i] + b * o2h[i];
        st.l[h] = a * st.l[h] + b * l2[h];
        st.m[h] = mx;
    }
}

size_t nb_attn_scratch_floats(const nb_config *c) {
    const size_t G = (size_t)(c->n_head / c->n_head_kv), nq = (size_t)attn_tile_tokens(c) * G, hd = c->head_dim;
    /* tile queries, block scores, block state, segment state, result state */
    return nq * hd + nq * ATTN_BLOCK + 3 * nq * (hd + 2);
}

size_t nb_attn_split_floats(const nb_config *c) {
    const size_t G = (size_t)(c->n_head / c->n_head_kv), hd = c->head_dim;
    return (size_t)ATTN_SPLIT_TOK * c->n_head_kv * ATTN_SEGMENTS * G * (hd + 2);
}

/* A thread's scratch for nq queries (the tile's queries are copied to q). */
typedef struct {
    float *q, *sc;
    attn_state blk, seg, acc;
    int dt; /* the pass's KV element type */
} attn_scratch;

static attn_scratch scratch_for(nb_model *m, int ith, int dt) {
    const nb_config *c = &m->cfg;
    const int hd = c->head_dim, nq = attn_tile_tokens(c) * (c->n_head / c->n_head_kv);
    float *p = m->attn_scratch + (size_t)ith * nb_attn_scratch_floats(c);
    attn_scratch w;
    w.q = p;
    w.sc = p + (size_t)nq * hd;
    p = w.sc + (size_t)nq * ATTN_BLOCK;
    w.blk = state_at(p, nq, hd);
    w.seg = state_at(p + (size_t)nq * (hd + 2), nq, hd);
    w.acc = state_at(p + 2 * (size_t)nq * (hd + 2), nq, hd);
    w.dt = dt;
    return w;
}

/* Asks for n bytes at p to be brought towards the core (to L2), ahead of their use: a block's
 * values are read in several passes of a few dimensions each, which the hardware prefetcher
 * does not foresee, and the next block's keys follow. */
static void prefetch_bytes(const char *p, size_t n) {
#if defined(__GNUC__)
    for (size_t i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 2);
#else
    (void)p;
    (void)n;
#endif
}

/* Block state of queries [q0, q0 + nq) over the n positions at K, V (their first row). */
static void attend_block(nb_model *m, const char *K, const char *V, int n, const float *q, int q0, int nq,
                         attn_scratch *w) {
    const nb_config *c = &m->cfg;
    const int hd = c->head_dim;
    float *sc = w->sc + (size_t)q0 * ATTN_BLOCK, *ob = w->blk.o + (size_t)q0 * hd;
    m->k->attn_scores(K, w->dt, n, hd, q + (size_t)q0 * hd, nq, 1.0f / sqrtf((float)hd), sc, ATTN_BLOCK);
    for (int h = 0; h < nq; h++) {
        float *sh = sc + (size_t)h * ATTN_BLOCK, mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = max_f(mx, sh[j]);
        w->blk.m[q0 + h] = mx;
        w->blk.l[q0 + h] = m->k->exp_sum(sh, n, mx);
    }
    memset(ob, 0, sizeof(float) * (size_t)nq * hd);
    m->k->attn_values(V, w->dt, n, hd, sc, nq, ATTN_BLOCK, ob);
}

/* Segment seg of the KV head at K, V (row 0) for the T tokens of a tile at positions
 * pos0 .. pos0 + T - 1 (their G queries each at q) into w->seg. Tokens before the segment's
 * first position take no part (their states stay empty). */
static void attend_segment(nb_model *m, const char *K, const char *V, int seg, int T, int pos0, const float *q,
                           attn_scratch *w) {
    const nb_config *c = &m->cfg;
    const int G = c->n_head / c->n_head_kv, hd = c->head_dim, S = attn_seg_blocks(c);
    const size_t row = (size_t)hd * kv_esz(w->dt);
    const int last = pos0 + T - 1, b1 = (seg + 1) * S < last / ATTN_BLOCK + 1 ? (seg + 1) * S : last / ATTN_BLOCK + 1;
    state_init(w->seg, T * G, hd);
    {
        const int j0 = seg * S * ATTN_BLOCK, n = last - j0 + 1 < ATTN_BLOCK ? last - j0 + 1 : ATTN_BLOCK;
        prefetch_bytes(K + (size_t)j0 * row, (size_t)n * row);
    }
    for (int b = seg * S; b < b1; b++) {
        const int j0 = b * ATTN_BLOCK;
        const char *Kb = K + (size_t)j0 * row, *Vb = V + (size_t)j0 * row;
        const int nrows = last - j0 + 1 < ATTN_BLOCK ? last - j0 + 1 : ATTN_BLOCK;
        prefetch_bytes(Vb, (size_t)nrows * row);
        if (b + 1 < b1) {
            const int next = last - j0 - ATTN_BLOCK + 1;
            prefetch_bytes(Kb + ATTN_BLOCK * row, (size_t)(next < ATTN_BLOCK ? next : ATTN_BLOCK) * row);
        }
        const int ta = j0 > pos0 ? j0 - pos0 : 0; /* the first token that sees this block */
        int tf = j0 + ATTN_BLOCK - 1 - pos0;       /* the first that sees all of it */
        tf = tf < ta ? ta : tf > T ? T : tf;
        if (tf < T) attend_block(m, Kb, Vb, ATTN_BLOCK, q, tf * G, (T - tf) * G, w);
        for (int t = ta; t < tf; t++) attend_block(m, Kb, Vb, pos0 + t - j0 + 1, q, t * G, G, w);
        state_merge(w->seg, w->blk.m, w->blk.l, w->blk.o, ta * G, T * G, hd);
    }
}

/* out[h] = o[h] / l[h] for queries [0, nq) of st. */
static void state_finish(attn_state st, int nq, int hd, float *out, size_t stride_tok, int G) {
    for (int h = 0; h < nq; h++) {
        const float inv = 1.0f / st.l[h], *o = st.o + (size_t)h * hd;
        float *dst = out + (size_t)(h / G) * stride_tok + (size_t)(h % G) * hd;
        for (int i = 0; i < hd; i++) dst[i] = o[i] * inv;
    }
}

/* The attention of one step: work items are (tile, KV head) pairs, or with few tokens
 * (token, KV head, run of segments) whose segment states are merged afterwards. */
typedef struct {
    const nb_step *s;
    int split, ntiles, total;
    int tile0[NB_UBATCH + 1]; /* tile i: batch tokens tile0[i] .. tile0[i + 1] - 1 */
    int seg_run;                   /* split: segments per item (a run of them, for long streams) */
    int item0[ATTN_SPLIT_TOK + 1]; /* split: items of token t start at item0[t] * n_head_kv */
    atomic_int next;
} attn_job;

static size_t kv_head_base(const nb_step *s, int t, int g) { return kv_offset(&s->m->cfg, s->slot[t], s->il, g, 0); }

static void attend_tile(const attn_job *job, int tile, int g, attn_scratch *w) {
    const nb_step *s = job->s;
    nb_model *m = s->m;
    const nb_config *c = &m->cfg;
    const int G = c->n_head / c->n_head_kv, hd = c->head_dim, S = attn_seg_blocks(c);
    const int t0 = job->tile0[tile], T = job->tile0[tile + 1] - t0, pos0 = s->pos[t0];
    const size_t D = (size_t)c->n_head * hd, esz = kv_esz(s->kv_type), base = kv_head_base(s, t0, g) * esz;
    const char *K = (const char *)m->kcache + base, *V = (const char *)m->vcache + base;
    for (int t = 0; t < T; t++)
        memcpy(w->q + (size_t)t * G * hd, m->qb + (t0 + t) * D + (size_t)g * G * hd, sizeof(float) * G * hd);
    state_init(w->acc, T * G, hd);
    const int nseg = (pos0 + T - 1) / ATTN_BLOCK / S + 1;
    for (int seg = 0; seg < nseg; seg++) {
        attend_segment(m, K, V, seg, T, pos0, w->q, w);
        const int first = seg * S * ATTN_BLOCK - pos0; /* tokens before the segment sit it out */
        state_merge(w->acc, w->seg.m, w->seg.l, w->seg.o, (first > 0 ? first : 0) * G, T * G, hd);
    }
    state_finish(w->acc, T * G, hd, m->attn + t0 * D + (size_t)g * G * hd, D, G);
}

/* Where the split decode keeps segment seg of token t, KV head g: m[G], l[G], o[G x hd]. */
static float *split_state(nb_model *m, int t, int g, int seg) {
    const nb_config *c = &m->cfg;
    const size_t G = (size_t)(c->n_head / c->n_head_kv), one = G * (c->head_dim + 2);
    return m->attn_split + (((size_t)t * c->n_head_kv + g) * ATTN_SEGMENTS + seg) * one;
}

/* Split decode item: segments [c * seg_run, (c + 1) * seg_run) of one token and KV head, each
 * segment's state kept for merge_split. */
static void attend_split(const attn_job *job, int item, attn_scratch *w) {
    const nb_step *s = job->s;
    nb_model *m = s->m;
    const nb_config *c = &m->cfg;
    const int nkv = c->n_head_kv, G = c->n_head / nkv, hd = c->head_dim;
    int t = 0;
    while (item >= job->item0[t + 1] * nkv) t++;
    /* a token's runs of one KV head come one after the other: contiguous memory */
    const int nruns = job->item0[t + 1] - job->item0[t], rel = item - job->item0[t] * nkv, g = rel / nruns;
    const int nseg = s->pos[t] / (attn_seg_blocks(c) * ATTN_BLOCK) + 1, seg0 = (rel % nruns) * job->seg_run;
    const int seg1 = seg0 + job->seg_run < nseg ? seg0 + job->seg_run : nseg;
    const size_t D = (size_t)c->n_head * hd, base = kv_head_base(s, t, g) * kv_esz(s->kv_type);
    for (int seg = seg0; seg < seg1; seg++) {
        attend_segment(m, (const char *)m->kcache + base, (const char *)m->vcache + base, seg, 1, s->pos[t],
                       m->qb + t * D + (size_t)g * G * hd, w);
        float *dst = split_state(m, t, g, seg);
        memcpy(dst, w->seg.m, sizeof(float) * G);
        memcpy(dst + G, w->seg.l, sizeof(float) * G);
        memcpy(dst + 2 * G, w->seg.o, sizeof(float) * G * hd);
    }
}

static void attn_task(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *job = arg;
    attn_scratch w = scratch_for(job->s->m, ith, job->s->kv_type);
    const int nkv = job->s->m->cfg.n_head_kv;
    for (int c; (c = nb_claim(&job->next, 1)) < job->total;) {
        if (job->split) attend_split(job, c, &w);
        else attend_tile(job, c / nkv, c % nkv, &w);
    }
}

/* The split decode's second half: each token's segments merged in order (as attend_tile). */
static void merge_split(const attn_job *job) {
    const nb_step *s = job->s;
    nb_model *m = s->m;
    const nb_config *c = &m->cfg;
    const int nkv = c->n_head_kv, G = c->n_head / nkv, hd = c->head_dim;
    const size_t D = (size_t)c->n_head * hd;
    attn_scratch w = scratch_for(m, 0, s->kv_type);
    for (int t = 0; t < s->n; t++)
        for (int g = 0; g < nkv; g++) {
            state_init(w.acc, G, hd);
            for (int seg = 0; seg <= s->pos[t] / (attn_seg_blocks(c) * ATTN_BLOCK); seg++) {
                const float *p = split_state(m, t, g, seg);
                state_merge(w.acc, p, p + G, p + 2 * G, 0, G, hd);
            }
            state_finish(w.acc, G, hd, m->attn + t * D + (size_t)g * G * hd, D, G);
        }
}

static void attention(const nb_step *s) {
    nb_model *m = s->m;
    const nb_config *c = &m->cfg;
    attn_job job = {.s = s, .split = s->n <= ATTN_SPLIT_TOK};
    atomic_init(&job.next, 0);
    if (job.split) {
        /* about ATTN_RUNS items per thread, each a run of consecutive segments, the runs of a
         * token and KV head of equal length (so that the items are too) */
        const int span = attn_seg_blocks(c) * ATTN_BLOCK, want = ATTN_RUNS * nb_pool_size(m->pool);
        const int heads = s->n * c->n_head_kv, runs = (want + heads - 1) / heads;
        int most = 0; /* segments of the longest token */
        for (int t = 0; t < s->n; t++) most = s->pos[t] / span + 1 > most ? s->pos[t] / span + 1 : most;
        job.seg_run = (most + runs - 1) / runs;
        job.item0[0] = 0;
        for (int t = 0; t < s->n; t++)
            job.item0[t + 1] = job.item0[t] + (s->pos[t] / span + job.seg_run) / job.seg_run;
        job.total = job.item0[s->n] * c->n_head_kv;
    } else { /* tiles: runs of tokens of one slot at consecutive positions */
        const int cap = attn_tile_tokens(c);
        job.tile0[0] = 0;
        for (int t = 1; t <= s->n; t++)
            if (t == s->n || s->slot[t] != s->slot[t - 1] || s->pos[t] != s->pos[t - 1] + 1 ||
                t - job.tile0[job.ntiles] == cap)
                job.tile0[++job.ntiles] = t;
        job.total = job.ntiles * c->n_head_kv;
    }
    nb_pool_run(m->pool, attn_task, &job);
    if (job.split) merge_split(&job);
}

static void op_ffn_act(const nb_step *s, const void *arg, int t) {
    (void)arg;
    nb_model *m = s->m;
    const int F = m->cfg.n_ff;
    float *g = m->g + (size_t)t * F;
    const float *u = m->u + (size_t)t * F;
    if (m->cfg.act == NB_RELU2) {
        for (int i = 0; i < F; i++) {
            const float r = relu_f(g[i]);
            g[i] = (r * r) * u[i];
        }
    } else {
        for (int i = 0; i < F; i++) g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
    }
    if (m->cfg.sub_norms) m->k->rmsnorm(g, g, s->L->ffn_sub_norm, F, m->cfg.rms_eps);
    const int Fp = nb_padded_cols(F); /* ffn_down's row length */
    int8_t *qa = m->qa + (size_t)t * Fp;
    m->k->quantize(g, F, qa, &m->qsum[t], &m->qs[t]);
    memset(qa + F, 0, (size_t)(Fp - F));
}

static void layer(const nb_step *s) {
    nb_model *m = s->m;
    const nb_config *cfg = &m->cfg;
    const nb_layer *L = s->L;
    const int n = s->n, E = cfg->n_embd, D = cfg->n_head * cfg->head_dim;
    const norm_quantize_arg attn_in = {m->x, m->hn, L->attn_norm, E};
    run_tokens(s, op_norm_quantize, &attn_in);
    const nb_tmat *qkv[3] = {&L->q, &L->k, &L->v};
    float *qkv_out[3] = {m->qb, m->kb, m->vb};
    matmul(m, n, 3, qkv, qkv_out, 0);
    run_tokens(s, op_rope_store, NULL);
    attention(s);
    const norm_quantize_arg attn_out = {m->attn, m->attn, cfg->sub_norms ? L->attn_sub_norm : NULL, D};
    run_tokens(s, op_norm_quantize, &attn_out);
    const nb_tmat *o[1] = {&L->o};
    float *x_out[1] = {m->x};
    matmul(m, n, 1, o, x_out, 1);
    const norm_quantize_arg ffn_in = {m->x, m->hn, L->ffn_norm, E};
    run_tokens(s, op_norm_quantize, &ffn_in);
    const nb_tmat *gu[2] = {&L->gate, &L->up};
    float *gu_out[2] = {m->g, m->u};
    matmul(m, n, 2, gu, gu_out, 0);
    run_tokens(s, op_ffn_act, NULL);
    const nb_tmat *down[1] = {&L->down};
    matmul(m, n, 1, down, x_out, 1);
}

static void embed(nb_model *m, const int32_t *tokens, int n) {
    const nb_config *cfg = &m->cfg;
    const size_t E = cfg->n_embd, esz = cfg->tok_embd_type == NB_F32 ? 4 : 2;
    const int tied = cfg->tok_embd == cfg->output; /* then rows can come from the head's file */
    for (int t = 0; t < n; t++) {
        const void *row = tied ? nb_head_row(m, tokens[t], 0) : (const char *)cfg->tok_embd + (size_t)tokens[t] * E * esz;
        m->k->to_f32(m->x + t * E, row, cfg->tok_embd_type, (int)E);
    }
}

static void rope_tables(nb_model *m, const int *pos, int n) {
    const int half = m->cfg.head_dim / 2;
    for (int t = 0; t < n; t++) {
        const double p = (double)pos[t];
        for (int i = 0; i < half; i++) {
            double a = p * m->rope_freq[i];
            m->rope_cos[(size_t)t * half + i] = (float)cos(a);
            m->rope_sin[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

/* ---- the head ---- */

typedef struct {
    nb_model *m;
    int ntok;
    float *logits;
    atomic_int next;
} head_job;

#define HEAD_CHUNK 256 /* rows per claim: longer streams, as for the matmuls (+2% decode against 64) */

/* The logit of vocabulary row r for batch token t, one function per head type (enum nb_head). */
static inline float head_exact(const nb_model *m, int r, int t) {
    const int E = m->cfg.n_embd;
    const char *row = (const char *)m->cfg.output + (size_t)r * E * (m->cfg.output_type == NB_F32 ? 4 : 2);
    return m->k->dot_row(m->hn + (size_t)t * E, row, m->cfg.output_type, E);
}

static inline float head_q8(const nb_model *m, int r, int t) {
    const int E = m->cfg.n_embd;
    int32_t d = m->k->dot_i8(m->qa + (size_t)t * E, m->head_q + (size_t)r * E, E);
    return (float)d * (m->head_scale[r] / m->qs[t]);
}

static inline float head_q4(const nb_model *m, int r, int t) {
    const int E = m->cfg.n_embd, G = E / 128;
    return m->k->dot_q4(m->head_q4 + (size_t)r * (E / 2), m->head_scale + (size_t)r * G,
                        m->qa + (size_t)t * E, m->head_gsum + (size_t)t * G, E) / m->qs[t];
}

/* The claim loop of the head tasks: HEAD_CHUNK rows at a time, each row for every token. logit
 * is a constant in each task below, so it is inlined there. */
__attribute__((always_inline)) static inline void head_rows(head_job *job,
                                                            float (*logit)(const nb_model *, int, int)) {
    const int V = job->m->cfg.n_vocab;
    for (;;) {
        int r0 = nb_claim(&job->next, HEAD_CHUNK);
        if (r0 >= V) break;
        int r1 = r0 + HEAD_CHUNK < V ? r0 + HEAD_CHUNK : V;
        for (int r = r0; r < r1; r++)
            for (int t = 0; t < job->ntok; t++) job->logits[(size_t)t * V + r] = logit(job->m, r, t);
    }
}

#define NB_HEAD_TASK(kind)                                                                     \
    static void head_##kind##_task(void *arg, int ith, int nth) {                              \
        (void)ith;                                                                             \
        (void)nth;                                                                             \
        head_rows(arg, head_##kind);                                                           \
    }
NB_HEAD_TASK(exact)
NB_HEAD_TASK(q8)
#undef NB_HEAD_TASK

/* The q4 head: several tokens (sequences decoded together) share each row's unpacking. */
static void head_q4_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    head_job *job = arg;
    if (job->ntok == 1) {
        head_rows(job, head_q4);
        return;
    }
    const nb_model *m = job->m;
    const int V = m->cfg.n_vocab, E = m->cfg.n_embd, G = E / 128;
    float d[NB_UBATCH];
    for (;;) {
        int r0 = nb_claim(&job->next, HEAD_CHUNK);
        if (r0 >= V) break;
        int r1 = r0 + HEAD_CHUNK < V ? r0 + HEAD_CHUNK : V;
        for (int r = r0; r < r1; r++) {
            m->k->dot_q4_rows(m->head_q4 + (size_t)r * (E / 2), m->head_scale + (size_t)r * G, m->qa, m->head_gsum,
                              E, job->ntok, d);
            for (int t = 0; t < job->ntok; t++) job->logits[(size_t)t * V + r] = d[t] / m->qs[t];
        }
    }
}

static const nb_task_fn HEAD_TASKS[] = {
    [NB_HEAD_EXACT] = head_exact_task, [NB_HEAD_Q8] = head_q8_task, [NB_HEAD_Q4] = head_q4_task};

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

/* The rescoring on every thread: first each token's best candidates (one token an item), then
 * their exact logits (RESCORE_CHUNK candidates an item; each logit is one dot_row, whoever
 * computes it). With 8 sequences, the serial loop took ~5% of a decode step. */
#define RESCORE_CHUNK 32

typedef struct {
    nb_model *m;
    int ntok, items;
    float *logits;
    int (*idx)[NB_RESCORE];
    int *count;
    atomic_int next;
} rescore_job;

static void top_k_task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    rescore_job *job = arg;
    const int V = job->m->cfg.n_vocab;
    for (int t; (t = nb_claim(&job->next, 1)) < job->ntok;)
        job->count[t] = top_k_indices(job->logits + (size_t)t * V, V, V < NB_RESCORE ? V : NB_RESCORE, job->idx[t]);
}

static void rescore_task(void *arg, int ith, int nth) {
    (void)nth;
    rescore_job *job = arg;
    const nb_model *m = job->m;
    const int E = m->cfg.n_embd, V = m->cfg.n_vocab, per_tok = NB_RESCORE / RESCORE_CHUNK;
    for (int c; (c = nb_claim(&job->next, 1)) < job->items;) {
        const int t = c / per_tok, i0 = c % per_tok * RESCORE_CHUNK;
        const int i1 = i0 + RESCORE_CHUNK < job->count[t] ? i0 + RESCORE_CHUNK : job->count[t];
        float *lt = job->logits + (size_t)t * V;
        for (int i = i0; i < i1; i++) {
            const int r = job->idx[t][i];
            lt[r] = m->k->dot_row(m->hn + (size_t)t * E, nb_head_row(m, r, ith), m->cfg.output_type, E);
        }
    }
}

static void rescore_best(nb_model *m, int ntok, float *logits) {
    int idx[NB_UBATCH][NB_RESCORE], count[NB_UBATCH];
    rescore_job job = {.m = m, .ntok = ntok, .items = ntok * (NB_RESCORE / RESCORE_CHUNK), .logits = logits,
                       .idx = idx, .count = count};
    atomic_init(&job.next, 0);
    if (ntok == 1) top_k_task(&job, 0, 1); /* one item: not worth waking the pool */
    else nb_pool_run(m->pool, top_k_task, &job);
    atomic_store_explicit(&job.next, 0, memory_order_relaxed);
    nb_pool_run(m->pool, rescore_task, &job);
}

/* Logits of the batch tokens rows[0..ntok) (indices into this batch) into
 * logits[0 .. ntok*n_vocab); exact: from the float rows only, whatever the model's head
 * (scoring calls). */
static void head(nb_model *m, const int *rows, int ntok, float *logits, int exact) {
    const enum nb_head kind = exact ? NB_HEAD_EXACT : m->cfg.head;
    const int E = m->cfg.n_embd;
    for (int t = 0; t < ntok; t++) {
        float *h = m->hn + (size_t)t * E;
        m->k->rmsnorm(h, m->x + (size_t)rows[t] * E, m->cfg.output_norm, E, m->cfg.rms_eps);
        if (kind == NB_HEAD_EXACT) continue;
        int8_t *q = m->qa + (size_t)t * E;
        m->k->quantize(h, E, q, &m->qsum[t], &m->qs[t]);
        if (kind == NB_HEAD_Q4)
            for (int g = 0; g < E / 128; g++) {
                int32_t sum = 0;
                for (int i = 0; i < 128; i++) sum += q[g * 128 + i];
                m->head_gsum[(size_t)t * (E / 128) + g] = sum;
            }
    }
    head_job job = {.m = m, .ntok = ntok, .logits = logits};
    atomic_init(&job.next, 0);
    nb_pool_run(m->pool, HEAD_TASKS[kind], &job);
    if (kind != NB_HEAD_EXACT) rescore_best(m, ntok, logits);
}

/* One batch of nb <= NB_UBATCH tokens (any mix of slots and positions) through every layer,
 * then the head for the batch tokens rows[0..nrows) into logits. The one code path of both
 * entry points below. */
static void run_batch(nb_model *m, const int32_t *tokens, const int *slot, const int *pos, int nb,
                      const int *rows, int nrows, float *logits, int exact_head) {
    embed(m, tokens, nb);
    rope_tables(m, pos, nb);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const nb_step s = {.m = m, .L = &m->layers[il], .il = il, .n = nb, .pos = pos, .slot = slot,
                           .kv_type = exact_head ? NB_F32 : m->cfg.kv_type};
        layer(&s);
    }
    if (nrows > 0) head(m, rows, nrows, logits, exact_head);
}

int nb_model_forward(nb_model *m, const int32_t *tokens, int n, int n_past, float *logits,
                     int all_logits, int exact_head) {
    /* A caller in another thread meanwhile gets -1 instead of sharing the scratch. The exchange
     * (seq_cst, so acquire) and the release store at the end hand the model's state (KV cache,
     * scratch) from one pass to the next, whichever threads run them. */
    if (atomic_exchange(&m->busy, 1)) return -1;
    const size_t V = m->cfg.n_vocab;
    int pos[NB_UBATCH], slot[NB_UBATCH] = {0}, rows[NB_UBATCH];
    for (int b = 0; b < n; b += NB_UBATCH) {
        int nb = n - b < NB_UBATCH ? n - b : NB_UBATCH, nrows = 0;
        for (int t = 0; t < nb; t++) pos[t] = n_past + b + t;
        if (all_logits)
            for (; nrows < nb; nrows++) rows[nrows] = nrows;
        else if (b + nb == n)
            rows[nrows++] = nb - 1;
        run_batch(m, tokens + b, slot, pos, nb, rows, nrows, logits + (all_logits ? (size_t)b * V : 0), exact_head);
    }
    atomic_store_explicit(&m->busy, 0, memory_order_release);
    return 0;
}

int nb_model_forward_batch(nb_model *m, const int32_t *tokens, const int *slot, const int *pos, int n,
                           const int *rows, int nrows, float *logits, int exact_head) {
    if (atomic_exchange(&m->busy, 1)) return -1;
    const size_t V = m->cfg.n_vocab;
    int local[NB_UBATCH];
    for (int b = 0, r = 0; b < n; b += NB_UBATCH) {
        const int nb = n - b < NB_UBATCH ? n - b : NB_UBATCH, r0 = r;
        for (; r < nrows && rows[r] < b + nb; r++) local[r - r0] = rows[r] - b;
        run_batch(m, tokens + b, slot + b, pos + b, nb, local, r - r0, logits + (size_t)r0 * V, exact_head);
    }
    atomic_store_explicit(&m->busy, 0, memory_order_release);
    return 0;
}
