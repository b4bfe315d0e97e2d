/* Small helpers shared by the C core's files: scalar rounding and max, AVX2 horizontal sums. */
#ifndef NB_SIMD_H
#define NB_SIMD_H

#include <stdint.h>
#include <string.h>

static inline float round_even(float x) { return (x + 12582912.0f) - 12582912.0f; } /* |x| < 2^22 */

/* fmaxf is a libm call at the baseline ISA; NaN handling does not matter here. */
static inline float max_f(float a, float b) { return b > a ? b : a; }

/* x > 0 ? x : +0 (NaN too) without a branch: the compiler vectorizes a loop of these, where the
 * comparison stays a branch that random signs mispredict half the time (ReLU² over ffn_gate
 * took 8% of a prefill). */
static inline float relu_f(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= -(uint32_t)(x > 0.0f);
    memcpy(&x, &bits, sizeof x);
    return x;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* AVX2 functions are compiled per function and chosen at run time (kernels.c). */
#define NB_AVX2 __attribute__((target("avx2,fma,f16c")))
#define NB_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
/* The AVX-512 VNNI kernels (vpdpbusd on ymm registers, 32 of them): AVX2 plus these. */
#define NB_VNNI_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define NB_VNNI __attribute__((target(NB_VNNI_TARGET)))
#define NB_VNNI_INLINE __attribute__((target(NB_VNNI_TARGET), always_inline)) static inline

NB_AVX2_INLINE int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

NB_AVX2_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#endif
