/* The compute kernels, as a table chosen once per model: portable C or AVX2 (runtime dispatch). */
#ifndef NB_KERNELS_H
#define NB_KERNELS_H

#include <stdint.h>

enum nb_dtype { NB_F32 = 0, NB_F16 = 1, NB_BF16 = 2 };

typedef struct {
    const char *name;
    /* I2_S rows [r0, r1) of a matrix with `cols` columns (cols % 128 == 0) times ntok int8
     * activation rows (q + t*cols, qsum[t] = their sum):
     *   y[t*ys + r] (+)= (float)(sum_k code[r][k] * q[t][k] - qsum[t]) * fac[t]. */
    void (*ternary)(const uint8_t *w, int cols, int r0, int r1, const int8_t *q,
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
    /* y[i] += a * x[i] (attention's weighted sum of values). */
    void (*axpy)(float *y, float a, const float *x, int n);
    /* dst[i] = float(row[i]), row f32, f16 or bf16 (exact). */
    void (*to_f32)(float *dst, const void *row, int dtype, int n);
} nb_kernels;

const nb_kernels *nb_kernels_portable(void);
/* NULL when this build or CPU has no AVX2/FMA/F16C. */
const nb_kernels *nb_kernels_avx2(void);

/* The implementations behind the tables (kernels.c). */
#define NB_TERNARY_ARGS                                                                        \
    const uint8_t *w, int cols, int r0, int r1, const int8_t *q, const int32_t *qsum,         \
        const float *fac, int ntok, float *y, int ys, int accumulate
void nb_ternary_portable(NB_TERNARY_ARGS);
float nb_dot_row_portable(const float *x, const void *row, int dtype, int n);
int32_t nb_dot_i8_portable(const int8_t *a, const int8_t *b, int n);
float nb_dot_q4_portable(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n);
void nb_axpy_portable(float *y, float a, const float *x, int n);
void nb_to_f32_portable(float *dst, const void *row, int dtype, int n);
#if defined(__x86_64__) || defined(__i386__)
void nb_ternary_avx2(NB_TERNARY_ARGS);
float nb_dot_row_avx2(const float *x, const void *row, int dtype, int n);
int32_t nb_dot_i8_avx2(const int8_t *a, const int8_t *b, int n);
float nb_dot_q4_avx2(const uint8_t *w, const float *s, const int8_t *a, const int32_t *gsum, int n);
void nb_axpy_avx2(float *y, float a, const float *x, int n);
void nb_to_f32_avx2(float *dst, const void *row, int dtype, int n);
#endif

#endif
