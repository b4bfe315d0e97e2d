/* Float / int8 vector kernels (head, attention, KV store): portable C and AVX2. */
#include <math.h>
#include <stddef.h>

#include "fp16.h"
#include "kernels.h"
#include "simd.h"

float nb_dot_row_portable(const float *x, const void *row, int dtype, int n) {
    float acc = 0.0f;
    if (dtype == NB_F32) {
        const float *r = row;
        for (int i = 0; i < n; i++) acc += x[i] * r[i];
    } else if (dtype == NB_F16) {
        const uint16_t *r = row;
        for (int i = 0; i < n; i++) acc += x[i] * nb_f16_to_f32(r[i]);
    } else {
        const uint16_t *r = row;
        for (int i = 0; i < n; i++) acc += x[i] * nb_bf16_to_f32(r[i]);
    }
    return acc;
}

int32_t nb_dot_i8_portable(const int8_t *a, const int8_t *b, int n) {
    int32_t acc = 0;
    for (int i = 0; i < n; i++) acc += (int32_t)a[i] * b[i];
    return acc;
}

float nb_dot_q4_portable(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n) {
    float acc = 0.0f;
    for (int g = 0; g < n / 128; g++, w += 64, a += 128) {
        int32_t d = 0;
        for (int j = 0; j < 32; j++)
            d += (w[j] & 15) * a[j] + (w[j] >> 4) * a[32 + j] + (w[32 + j] & 15) * a[64 + j] +
                 (w[32 + j] >> 4) * a[96 + j];
        acc += s[g] * (float)(d - 8 * gsum[g]);
    }
    return acc;
}

void nb_dot_q4_rows_portable(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                             int ntok, float *out) {
    for (int t = 0; t < ntok; t++) out[t] = nb_dot_q4_portable(w, s, a + (size_t)t * n, gsum + (size_t)t * (n / 128), n);
}

/* Element size of a KV cache row type (f32, f16 or bf16). */
static inline size_t kv_esz(int dtype) { return dtype == NB_F32 ? 4 : 2; }

void nb_attn_scores_portable(const void *K, int dtype, int npos, int hd, const float *q, int nq, float scale,
                             float *s, int ss) {
    const size_t row = (size_t)hd * kv_esz(dtype);
    for (int h = 0; h < nq; h++)
        for (int j = 0; j < npos; j++)
            s[(size_t)h * ss + j] =
                nb_dot_row_portable(q + (size_t)h * hd, (const char *)K + (size_t)j * row, dtype, hd) * scale;
}

void nb_attn_values_portable(const void *V, int dtype, int npos, int hd, const float *p, int nq, int ss,
                             float *out) {
    const uint16_t *v16 = V;
    const float *v32 = V;
    for (int h = 0; h < nq; h++) {
        float *o = out + (size_t)h * hd;
        for (int j = 0; j < npos; j++) {
            const float a = p[(size_t)h * ss + j];
            const size_t r = (size_t)j * hd;
            if (dtype == NB_F32)
                for (int i = 0; i < hd; i++) o[i] += a * v32[r + i];
            else if (dtype == NB_F16)
                for (int i = 0; i < hd; i++) o[i] += a * nb_f16_to_f32(v16[r + i]);
            else
                for (int i = 0; i < hd; i++) o[i] += a * nb_bf16_to_f32(v16[r + i]);
        }
    }
}

void nb_to_f32_portable(float *dst, const void *row, int dtype, int n) {
    const uint16_t *h = row;
    if (dtype == NB_F32)
        memcpy(dst, row, sizeof(float) * (size_t)n);
    else if (dtype == NB_F16)
        for (int i = 0; i < n; i++) dst[i] = nb_f16_to_f32(h[i]);
    else
        for (int i = 0; i < n; i++) dst[i] = nb_bf16_to_f32(h[i]);
}

static float rms_inv(double ss, int n, float eps) { return 1.0f / sqrtf((float)(ss / n) + eps); }

void nb_rmsnorm_portable(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float inv = rms_inv(ss, n, eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] * inv) * w[i];
}

static int32_t quantize_tail(const float *v, int n, int8_t *q, float s) {
    int32_t sum = 0;
    for (int i = 0; i < n; i++) {
        float r = round_even(v[i] * s);
        r = r > 127.0f ? 127.0f : r;
        r = r < -128.0f ? -128.0f : r;
        q[i] = (int8_t)r;
        sum += q[i];
    }
    return sum;
}

static float quant_scale(float amax) { return 127.0f / max_f(amax, 1e-5f); }

void nb_quantize_portable(const float *v, int n, int8_t *q, int32_t *qsum, float *s) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = max_f(amax, fabsf(v[i]));
    *s = quant_scale(amax);
    *qsum = quantize_tail(v, n, q, *s);
}

float nb_exp_sum_portable(float *s, int n, float mx) {
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

#if defined(__x86_64__) || defined(__i386__)

NB_AVX2 static inline __m256 load_row8(const void *row, int dtype, int i) {
    if (dtype == NB_F32) return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (dtype == NB_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

NB_AVX2 float nb_dot_row_avx2(const float *x, const void *row, int dtype, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)row + (size_t)i * (dtype == NB_F32 ? 4 : 2) + 1024, _MM_HINT_T0);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_row8(row, dtype, i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_row8(row, dtype, i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load_row8(row, dtype, i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load_row8(row, dtype, i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_row8(row, dtype, i), a0);
    float acc = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    if (i < n) {
        size_t esz = dtype == NB_F32 ? 4 : 2;
        acc += nb_dot_row_portable(x + i, (const char *)row + (size_t)i * esz, dtype, n - i);
    }
    return acc;
}

/* int8 x int8 via maddubs(|b|, sign(a, b)); exact while |a|, |b| <= 127. */
NB_AVX2 int32_t nb_dot_i8_avx2(const int8_t *a, const int8_t *b, int n) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        _mm_prefetch((const char *)(b + i) + 1024, _MM_HINT_T0); /* the head streams rows */
        __m256i va0 = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i vb0 = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i va1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
        __m256i vb1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
        __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(vb0, vb0), _mm256_sign_epi8(va0, vb0));
        __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(vb1, vb1), _mm256_sign_epi8(va1, vb1));
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p0, ones));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p1, ones));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + i));
        __m256i vb = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(vb, vb), _mm256_sign_epi8(va, vb));
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p, ones));
    }
    int32_t acc = hsum_i32(_mm256_add_epi32(acc0, acc1));
    for (; i < n; i++) acc += (int32_t)a[i] * b[i];
    return acc;
}

/* The 128 4-bit codes of one head group (64 bytes at w) as four vectors of bytes, in the order of
 * the group's activations (the layout is in kernels.h). */
NB_AVX2_INLINE void q4_codes(const uint8_t *w, __m256i *c0, __m256i *c1, __m256i *c2, __m256i *c3) {
    const __m256i low = _mm256_set1_epi8(15);
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)w), v1 = _mm256_loadu_si256((const __m256i *)(w + 32));
    *c0 = _mm256_and_si256(v0, low);
    *c1 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
    *c2 = _mm256_and_si256(v1, low);
    *c3 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
}

/* One q4 head row against T tokens (T a constant where inlined): each group's codes are unpacked
 * once, then every token runs the same sequence of operations on them, so a token's result does
 * not depend on T (nb_dot_q4_avx2 is T = 1). Per int16 lane, 4 product pairs of at most 15 * 128
 * each: 15360, no overflow; the code offset, -8 * gsum, joins lane 0 in integers (exact) before
 * the scaling. */
NB_AVX2_INLINE void dot_q4_tokens(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                                  int T, float *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int G = n / 128;
    __m256 acc[4];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++, w += 64) {
        _mm_prefetch((const char *)w + 4096, _MM_HINT_T0);
        __m256i c0, c1, c2, c3;
        q4_codes(w, &c0, &c1, &c2, &c3);
        const __m256 sg = _mm256_set1_ps(s[g]);
        for (int t = 0; t < T; t++) {
            const int8_t *at = a + (size_t)t * n + (size_t)g * 128;
            __m256i p = _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)at));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(at + 32))));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *)(at + 64))));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *)(at + 96))));
            const __m256i d = _mm256_sub_epi32(_mm256_madd_epi16(p, ones),
                                               _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, 8 * gsum[(size_t)t * G + g]));
            acc[t] = _mm256_fmadd_ps(sg, _mm256_cvtepi32_ps(d), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) out[t] = hsum_ps(acc[t]);
}

/* One token: the head streams from DRAM, prefetched well ahead as the ternary decode tiles do. */
NB_AVX2 float nb_dot_q4_avx2(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n) {
    float out;
    dot_q4_tokens(w, s, a, gsum, n, 1, &out);
    return out;
}

NB_AVX2 void nb_dot_q4_rows_avx2(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                                 int ntok, float *out) {
    const int G = n / 128;
    for (int t0 = 0; t0 < ntok; t0 += 4) {
        const int8_t *at = a + (size_t)t0 * n;
        const int32_t *gt = gsum + (size_t)t0 * G;
        switch (ntok - t0 < 4 ? ntok - t0 : 4) {
        case 1: dot_q4_tokens(w, s, at, gt, n, 1, out + t0); break;
        case 2: dot_q4_tokens(w, s, at, gt, n, 2, out + t0); break;
        case 3: dot_q4_tokens(w, s, at, gt, n, 3, out + t0); break;
        default: dot_q4_tokens(w, s, at, gt, n, 4, out + t0); break;
        }
    }
}

/* Scores of four queries against two key rows (eight independent sums); every (query, row)
 * sum runs over i in steps of 8 with one accumulator, as in scores_1x1, so a query's scores do
 * not depend on how the queries are grouped. */
NB_AVX2_INLINE void scores_4x2(const char *k0, const char *k1, int dt, int hd, const float *q, float scale,
                               float *s, int ss) {
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) {
        const __m256 x0 = load_row8(k0, dt, i), x1 = load_row8(k1, dt, i);
        for (int h = 0; h < 4; h++) {
            const __m256 qh = _mm256_loadu_ps(q + (size_t)h * hd + i);
            a[2 * h] = _mm256_fmadd_ps(qh, x0, a[2 * h]);
            a[2 * h + 1] = _mm256_fmadd_ps(qh, x1, a[2 * h + 1]);
        }
    }
    for (int h = 0; h < 4; h++) {
        s[(size_t)h * ss] = hsum_ps(a[2 * h]) * scale;
        s[(size_t)h * ss + 1] = hsum_ps(a[2 * h + 1]) * scale;
    }
}

NB_AVX2_INLINE void scores_1x1(const char *k, int dt, int hd, const float *q, float scale, float *s) {
    __m256 a = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_row8(k, dt, i), a);
    *s = hsum_ps(a) * scale;
}

NB_AVX2_INLINE void attn_scores_dt(const void *K, int dt, int npos, int hd, const float *q, int nq, float scale,
                                   float *s, int ss) {
    const size_t row = (size_t)hd * (dt == NB_F32 ? 4 : 2);
    const char *k = K;
    int j = 0;
    for (; j + 2 <= npos; j += 2) {
        int h = 0;
        for (; h + 4 <= nq; h += 4)
            scores_4x2(k + j * row, k + (j + 1) * row, dt, hd, q + (size_t)h * hd, scale, s + (size_t)h * ss + j, ss);
        for (; h < nq; h++)
            for (int jj = j; jj < j + 2; jj++)
                scores_1x1(k + jj * row, dt, hd, q + (size_t)h * hd, scale, s + (size_t)h * ss + jj);
    }
    for (; j < npos; j++)
        for (int h = 0; h < nq; h++) scores_1x1(k + j * row, dt, hd, q + (size_t)h * hd, scale, s + (size_t)h * ss + j);
}

NB_AVX2 void nb_attn_scores_avx2(const void *K, int dtype, int npos, int hd, const float *q, int nq, float scale,
                                 float *s, int ss) {
    if (hd % 8 != 0) {
        nb_attn_scores_portable(K, dtype, npos, hd, q, nq, scale, s, ss);
        return;
    }
    /* one copy per row type, so load_row8 is branch-free in the loops */
    if (dtype == NB_F32) attn_scores_dt(K, NB_F32, npos, hd, q, nq, scale, s, ss);
    else if (dtype == NB_F16) attn_scores_dt(K, NB_F16, npos, hd, q, nq, scale, s, ss);
    else attn_scores_dt(K, NB_BF16, npos, hd, q, nq, scale, s, ss);
}

/* Weighted sums of the value rows for Q (4 or 1) queries and 16 output dimensions, kept in
 * registers over all rows; each (query, 8 dimensions) sum runs over the rows in order. */
NB_AVX2_INLINE void values_q16(const char *V, int dt, size_t row, int npos, const float *p, int Q, int ss,
                               float *o, int hd) {
    __m256 a[8];
    for (int h = 0; h < Q; h++) {
        a[2 * h] = _mm256_loadu_ps(o + (size_t)h * hd);
        a[2 * h + 1] = _mm256_loadu_ps(o + (size_t)h * hd + 8);
    }
    for (int j = 0; j < npos; j++) {
        const char *v = V + (size_t)j * row;
        const __m256 v0 = load_row8(v, dt, 0), v1 = load_row8(v, dt, 8);
        for (int h = 0; h < Q; h++) {
            const __m256 w = _mm256_broadcast_ss(p + (size_t)h * ss + j);
            a[2 * h] = _mm256_fmadd_ps(w, v0, a[2 * h]);
            a[2 * h + 1] = _mm256_fmadd_ps(w, v1, a[2 * h + 1]);
        }
    }
    for (int h = 0; h < Q; h++) {
        _mm256_storeu_ps(o + (size_t)h * hd, a[2 * h]);
        _mm256_storeu_ps(o + (size_t)h * hd + 8, a[2 * h + 1]);
    }
}

NB_AVX2_INLINE void attn_values_dt(const void *V, int dt, int npos, int hd, const float *p, int nq, int ss,
                                   float *out) {
    const size_t esz = dt == NB_F32 ? 4 : 2, row = (size_t)hd * esz;
    for (int i = 0; i < hd; i += 16) {
        const char *v = (const char *)V + (size_t)i * esz;
        int h = 0;
        for (; h + 4 <= nq; h += 4) values_q16(v, dt, row, npos, p + (size_t)h * ss, 4, ss, out + (size_t)h * hd + i, hd);
        for (; h < nq; h++) values_q16(v, dt, row, npos, p + (size_t)h * ss, 1, ss, out + (size_t)h * hd + i, hd);
    }
}

NB_AVX2 void nb_attn_values_avx2(const void *V, int dtype, int npos, int hd, const float *p, int nq, int ss,
                                 float *out) {
    if (hd % 16 != 0) {
        nb_attn_values_portable(V, dtype, npos, hd, p, nq, ss, out);
        return;
    }
    if (dtype == NB_F32) attn_values_dt(V, NB_F32, npos, hd, p, nq, ss, out);
    else if (dtype == NB_F16) attn_values_dt(V, NB_F16, npos, hd, p, nq, ss, out);
    else attn_values_dt(V, NB_BF16, npos, hd, p, nq, ss, out);
}

/* exp(x) for x <= 0, within ~2 ulp of expf (Cephes' polynomial): x = n ln2 + r with
 * |r| <= ln2 / 2, exp(r) by a degree-7 polynomial, 2^n through the exponent bits. Inputs below
 * -87.3 are clamped there (exp = ~1e-38 instead of a denormal or 0: nothing for a softmax). */
NB_AVX2 static inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

NB_AVX2 float nb_exp_sum_avx2(float *s, int n, float mx) {
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    return hsum_ps(acc) + nb_exp_sum_portable(s + j, n - j, mx);
}

NB_AVX2 void nb_rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) { /* float * float is exact in double, as in the portable sum */
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double part[4];
    _mm256_storeu_pd(part, _mm256_add_pd(s0, s1));
    double ss = (part[0] + part[1]) + (part[2] + part[3]);
    for (int j = i; j < n; j++) ss += (double)x[j] * x[j];
    const float inv = rms_inv(ss, n, eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) out[i] = (x[i] * inv) * w[i];
}

NB_AVX2 void nb_quantize_avx2(const float *v, int n, int8_t *q, int32_t *qsum, float *s) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    for (; i < n; i++) amax = max_f(amax, fabsf(v[i]));
    const float scale = quant_scale(amax);
    const __m256 vs = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    /* the packs work inside 128-bit lanes; this puts the 4-byte groups back in order */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i sum = _mm256_setzero_si256();
    for (i = 0; i + 32 <= n; i += 32) {
        __m256i r[4];
        for (int k = 0; k < 4; k++) {
            const __m256 x = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i + 8 * k), vs),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(x, lo), hi));
            sum = _mm256_add_epi32(sum, r[k]);
        }
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
    }
    *qsum = hsum_i32(sum) + quantize_tail(v + i, n - i, q + i, scale);
    *s = scale;
}

NB_AVX2 void nb_to_f32_avx2(float *dst, const void *row, int dtype, int n) {
    int i = 0;
    if (dtype != NB_F32)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_row8(row, dtype, i));
    nb_to_f32_portable(dst + i, (const char *)row + (size_t)i * (dtype == NB_F32 ? 4 : 2), dtype, n - i);
}

/* ---- AVX-512 VNNI: the q4 head for several tokens (sequences decoded together). vpdpbusd adds
 * the products of bytes 4j..4j+3 into lane j, the lanes maddubs + madd fill in dot_q4_tokens: the
 * integer sums, and so every result, are bit for bit the AVX2 ones. One token stays on the AVX2
 * kernel (it is bound by memory; VNNI measured no faster there). With 4 tokens the head took
 * ~9 ms instead of ~11, with 8 (one pass) ~14 instead of ~20 (synthetic 2B shapes, 2 threads). */
NB_VNNI_INLINE void vnni_q4_tokens(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                                   int T, float *out) {
    const int G = n / 128;
    __m256 acc[8];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++, w += 64) {
        _mm_prefetch((const char *)w + 8192, _MM_HINT_T1); /* as the VNNI ternary tiles */
        __m256i c0, c1, c2, c3;
        q4_codes(w, &c0, &c1, &c2, &c3);
        const __m256 sg = _mm256_set1_ps(s[g]);
        for (int t = 0; t < T; t++) {
            const int8_t *at = a + (size_t)t * n + (size_t)g * 128;
            __m256i d = _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, -8 * gsum[(size_t)t * G + g]);
            d = _mm256_dpbusd_epi32(d, c0, _mm256_loadu_si256((const __m256i *)at));
            d = _mm256_dpbusd_epi32(d, c1, _mm256_loadu_si256((const __m256i *)(at + 32)));
            d = _mm256_dpbusd_epi32(d, c2, _mm256_loadu_si256((const __m256i *)(at + 64)));
            d = _mm256_dpbusd_epi32(d, c3, _mm256_loadu_si256((const __m256i *)(at + 96)));
            acc[t] = _mm256_fmadd_ps(sg, _mm256_cvtepi32_ps(d), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) out[t] = hsum_ps(acc[t]);
}

NB_VNNI void nb_dot_q4_rows_avx512vnni(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum,
                                       int n, int ntok, float *out) {
    const int G = n / 128;
    for (int t0 = 0; t0 < ntok; t0 += 8) { /* up to 8 tokens a pass: each group unpacked once */
        const int8_t *at = a + (size_t)t0 * n;
        const int32_t *gt = gsum + (size_t)t0 * G;
        switch (ntok - t0 < 8 ? ntok - t0 : 8) {
        case 1: vnni_q4_tokens(w, s, at, gt, n, 1, out + t0); break;
        case 2: vnni_q4_tokens(w, s, at, gt, n, 2, out + t0); break;
        case 3: vnni_q4_tokens(w, s, at, gt, n, 3, out + t0); break;
        case 4: vnni_q4_tokens(w, s, at, gt, n, 4, out + t0); break;
        case 5: vnni_q4_tokens(w, s, at, gt, n, 5, out + t0); break;
        case 6: vnni_q4_tokens(w, s, at, gt, n, 6, out + t0); break;
        case 7: vnni_q4_tokens(w, s, at, gt, n, 7, out + t0); break;
        default: vnni_q4_tokens(w, s, at, gt, n, 8, out + t0); break;
        }
    }
}
#endif
