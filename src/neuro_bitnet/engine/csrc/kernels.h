/* The compute kernels, as a table chosen once per model: portable C, AVX2, AVX-512 VNNI or AMX
 * (runtime dispatch). */
#ifndef NB_KERNELS_H
#define NB_KERNELS_H

#include <stdint.h>

enum nb_dtype { NB_F32 = 0, NB_F16 = 1, NB_BF16 = 2 };

typedef struct {
    const char *name;
    /* I2_S rows [r0, r1) of a matrix with `cols` columns (cols % 128 == 0) times ntok int8
     * activation rows (q + t*cols, qsum[t] = their sum):
     *   y[t*ys + r] (+)= (float)(sum_k code[r][k] * q[t][k] - qsum[t]) * fac[t].
     * pk: q as ternary_pack arranged it, or NULL (no pack step ran: the kernel reads q). */
    void (*ternary)(const uint8_t *w, int cols, int r0, int r1, const int8_t *q, const int8_t *pk,
                    const int32_t *qsum, const float *fac, int ntok, float *y, int ys,
                    int accumulate);
    /* sum_i x[i] * row[i] with f32 accumulation; row is f32, f16 or bf16. */
    float (*dot_row)(const float *x, const void *row, int dtype, int n);
    /* sum_i a[i] * b[i] over int8 (|values| <= 127), n % 32 == 0 for the fast path. */
    int32_t (*dot_i8)(const int8_t *a, const int8_t *b, int n);
    /* One row of the q4 head against int8 activations a[0..n), n % 128 == 0: per 128-weight
     * group g, 64 bytes of 4-bit codes u = q + 8 (bytes j of the group's two 32-byte halves hold
     * weights j | 32 + j and 64 + j | 96 + j, low nibble first) and scale s[g]; gsum[g] is the
     * sum of a over the group. Returns sum_g s[g] * (sum_i u_i * a_i - 8 * gsum[g]). */
    float (*dot_q4)(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n);
    /* The same row against ntok activation rows (a + t * n, gsum + t * (n / 128)): out[t] is
     * bit for bit dot_q4 of token t; the row's codes are unpacked once for all tokens. */
    void (*dot_q4_rows)(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                        int ntok, float *out);
    /* Attention of nq query heads (q: nq x hd, f32) over npos rows of one KV head (K, V:
     * npos x hd, dtype f32 or f16). scores: s[h * ss + j] = (q_h . K_j) * scale. values
     * (accumulates): out[h * hd + i] += sum_j p[h * ss + j] * V[j * hd + i]. Each result is
     * computed the same way whatever nq (a query's values do not depend on its neighbours). */
    void (*attn_scores)(const void *K, int dtype, int npos, int hd, const float *q, int nq, float scale,
                        float *s, int ss);
    void (*attn_values)(const void *V, int dtype, int npos, int hd, const float *p, int nq, int ss,
                        float *out);
    /* out[i] = (x[i] * r) * w[i], r = 1 / sqrt(mean(x^2) + eps) with the sum of squares in
     * double (so its order does not matter); out may be x. */
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    /* Per-token absmax int8: s = 127 / max(max|v|, 1e-5), q = clamp(round_half_even(v * s),
     * -128, 127), qsum = sum(q). Identical results on every path. */
    void (*quantize)(const float *v, int n, int8_t *q, int32_t *qsum, float *s);
    /* s[j] = exp(s[j] - mx) for j < n; returns their sum (the softmax denominator). */
    float (*exp_sum)(float *s, int n, float mx);
    /* dst[i] = float(row[i]), row f32, f16 or bf16 (exact). */
    void (*to_f32)(float *dst, const void *row, int dtype, int n);
    /* NULL, or the set's step before ternary, once per matmul: rearranges q (ntok x cols) into
     * pk (at most NB_TERNARY_PACK_BYTES(cols, ntok) bytes, 64-byte aligned) as its tiles read
     * it. Returns 0 when this ntok runs from q itself (ternary then gets pk NULL). */
    int (*ternary_pack)(const int8_t *q, int cols, int ntok, int8_t *pk);
} nb_kernels;

/* The most bytes ternary_pack writes: 16-token groups of cols int8 activations, 16 bytes per
 * column (AMX activation tiles, zero-padded to 16 tokens; the zmm tiles' layout of up to 4
 * tokens, (cols + 128) bytes each, fits too). */
#define NB_TERNARY_PACK_BYTES(cols, ntok) ((size_t)(((ntok) + 15) / 16) * (size_t)(cols) * 16)

/* The kernel set named isa: "auto" (the best one this CPU runs), "amx", "avx512vnni", "avx2" or
 * "portable". NULL
 * with *err set (a static message) when the name is unknown or the CPU cannot run that set. */
const nb_kernels *nb_kernels_select(const char *isa, const char **err);

/* The implementations behind the tables (kernels.c). */
#define NB_TERNARY_ARGS                                                                        \
    const uint8_t *w, int cols, int r0, int r1, const int8_t *q, const int8_t *pk,            \
        const int32_t *qsum, const float *fac, int ntok, float *y, int ys, int accumulate
/* Declares one set of implementations, nb_<kernel>_<sfx>, in the table's order. */
#define NB_DECLARE_KERNELS(sfx)                                                                 \
    void nb_ternary_##sfx(NB_TERNARY_ARGS);                                                    \
    float nb_dot_row_##sfx(const float *x, const void *row, int dtype, int n);                 \
    int32_t nb_dot_i8_##sfx(const int8_t *a, const int8_t *b, int n);                          \
    float nb_dot_q4_##sfx(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, \
                          int n);                                                              \
    void nb_dot_q4_rows_##sfx(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, \
                              int n, int ntok, float *out);                                    \
    void nb_attn_scores_##sfx(const void *K, int dtype, int npos, int hd, const float *q, int nq, \
                              float scale, float *s, int ss);                                  \
    void nb_attn_values_##sfx(const void *V, int dtype, int npos, int hd, const float *p, int nq, \
                              int ss, float *out);                                             \
    void nb_rmsnorm_##sfx(float *out, const float *x, const float *w, int n, float eps);       \
    void nb_quantize_##sfx(const float *v, int n, int8_t *q, int32_t *qsum, float *s);         \
    float nb_exp_sum_##sfx(float *s, int n, float mx);                                         \
    void nb_to_f32_##sfx(float *dst, const void *row, int dtype, int n);

/* The table of one set, for kernels.c: every kernel of set sfx, but the ternary one from set
 * tern and the multi-token head one from set q4 (the sets that only add matrix kernels, as
 * avx512vnni and amx), and the pack step pack (or 0). */
#define NB_KERNEL_TABLE_MATRIX(name, sfx, tern, q4, pack)                                       \
    {name, nb_ternary_##tern, nb_dot_row_##sfx, nb_dot_i8_##sfx, nb_dot_q4_##sfx, nb_dot_q4_rows_##q4, \
     nb_attn_scores_##sfx, nb_attn_values_##sfx, nb_rmsnorm_##sfx, nb_quantize_##sfx,          \
     nb_exp_sum_##sfx, nb_to_f32_##sfx, pack}
#define NB_KERNEL_TABLE(sfx) NB_KERNEL_TABLE_MATRIX(#sfx, sfx, sfx, sfx, 0)

NB_DECLARE_KERNELS(portable)
#if defined(__x86_64__) || defined(__i386__)
NB_DECLARE_KERNELS(avx2)
/* The avx512vnni set is the avx2 set with these matrix kernels (ternary_kernels.c and
 * float_kernels.c). */
void nb_ternary_avx512vnni(NB_TERNARY_ARGS);
void nb_dot_q4_rows_avx512vnni(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n,
                               int ntok, float *out);
/* The amx set is the avx512vnni set with its own ternary kernel: AMX-INT8 tiles from a few tokens
 * on, zmm VNNI tiles below (ternary_kernels.c). */
void nb_ternary_amx(NB_TERNARY_ARGS);
int nb_ternary_pack_amx(const int8_t *q, int cols, int ntok, int8_t *pk);
#endif

#endif
