/* I2_S ternary x int8 matrix kernels: portable C and AVX2.
 *
 * A row of `cols` weights is cols/128 blocks of 32 bytes; byte j of a block holds the codes of
 * weights j, 32+j, 64+j, 96+j in bits 7:6, 5:4, 3:2, 1:0. Code = w + 1, so the dot product with
 * codes is corrected by subtracting the sum of the activations once per row.
 */
#include <stddef.h>

#include "kernels.h"
#include "simd.h"

static inline void store_out(float *dst, int32_t dot, int32_t qsum, float fac, int accumulate) {
    float v = (float)(dot - qsum) * fac;
    *dst = accumulate ? *dst + v : v;
}

static int32_t row_dot_portable(const uint8_t *w, int nblk, const int8_t *q) {
    int32_t acc = 0;
    for (int b = 0; b < nblk; b++, w += 32, q += 128) {
        for (int j = 0; j < 32; j++) {
            int v = w[j];
            acc += ((v >> 6) & 3) * q[j] + ((v >> 4) & 3) * q[32 + j] + ((v >> 2) & 3) * q[64 + j] +
                   (v & 3) * q[96 + j];
        }
    }
    return acc;
}

void nb_ternary_portable(const uint8_t *w, int cols, int r0, int r1, const int8_t *q,
                         const int32_t *qsum, const float *fac, int ntok, float *y, int ys,
                         int accumulate) {
    const int nblk = cols / 128;
    const size_t row_bytes = (size_t)cols / 4;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * row_bytes;
        for (int t = 0; t < ntok; t++)
            store_out(&y[(size_t)t * ys + r], row_dot_portable(wr, nblk, q + (size_t)t * cols),
                      qsum[t], fac[t], accumulate);
    }
}

#if defined(__x86_64__) || defined(__i386__)
/* 4 KB ahead: at 1 KB a decode thread stalls on DRAM latency (measured ~8% slower). */
#define NB_PREFETCH 4096

/* One weight row against NT activation rows: each 32-byte block is unpacked once and applied
 * to all NT tokens. maddubs results are summed as int16 over up to NB_GROUP blocks before one
 * widening madd: per lane a block adds at most 4 * 2 * 3 * 128 = 3072 (even for the invalid
 * code 3), so 8 blocks stay below 32767. */
#define NB_GROUP 8
NB_AVX2_INLINE void row_tile(const uint8_t *w, int nblk, const int8_t *q, size_t qs, int NT,
                             int32_t *out) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8], acc16[8];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nblk; b0 += NB_GROUP) {
        const int b1 = b0 + NB_GROUP < nblk ? b0 + NB_GROUP : nblk;
        for (int t = 0; t < NT; t++) acc16[t] = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++) {
            /* Decode is bound by memory latency: ask for the weights well ahead (runs past the
             * row into the next ones, which is where the next call reads). */
            _mm_prefetch((const char *)(w + (size_t)b * 32) + NB_PREFETCH, _MM_HINT_T0);
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + (size_t)b * 32));
            __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v, 6), mask);
            __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 2), mask);
            __m256i c3 = _mm256_and_si256(v, mask);
            for (int t = 0; t < NT; t++) {
                const int8_t *a = q + (size_t)t * qs + (size_t)b * 128;
                /* a running sum (not a tree) keeps the 8 accumulators in registers */
                __m256i s = acc16[t];
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)a)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(a + 32))));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *)(a + 64))));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *)(a + 96))));
                acc16[t] = s;
            }
        }
        for (int t = 0; t < NT; t++) acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(acc16[t], ones));
    }
    for (int t = 0; t < NT; t++) out[t] = hsum_i32(acc[t]);
}

/* An empty asm that "modifies" the 8 accumulators: the compiler must have each of them in a
 * register here, so it cannot reassociate the int16 sums into trees of temporaries (gcc does,
 * and then spills half of them to the stack on every block). */
#define NB_KEEP_IN_REGISTERS(a, b)                                                              \
    __asm__("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(b[0]), "+x"(b[1]),       \
            "+x"(b[2]), "+x"(b[3]))

/* Prefill micro-tile: two weight rows against four activation rows. Each activation load now
 * feeds two maddubs instead of one, which halves the activation traffic from L2 (with one row
 * per tile, prefill was bound by those loads, not by the multiplies). 8 int16 accumulators,
 * 2 unpacked code vectors and one activation vector fit the 16 ymm registers. */
NB_AVX2_INLINE void tile_2x4(const uint8_t *w0, const uint8_t *w1, int nblk, const int8_t *q,
                             size_t qs, int32_t out0[4], int32_t out1[4]) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc0[4], acc1[4];
    for (int t = 0; t < 4; t++) acc0[t] = acc1[t] = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nblk; b0 += NB_GROUP) {
        const int b1 = b0 + NB_GROUP < nblk ? b0 + NB_GROUP : nblk;
        __m256i s0[4], s1[4];
        for (int t = 0; t < 4; t++) s0[t] = s1[t] = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++) {
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + (size_t)b * 32));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w1 + (size_t)b * 32));
            const int8_t *a = q + (size_t)b * 128;
#define NB_SLICE(shift, off)                                                                     \
    {                                                                                            \
        const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v0, shift), mask);                 \
        const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v1, shift), mask);                 \
        for (int t = 0; t < 4; t++) {                                                            \
            const __m256i x = _mm256_loadu_si256((const __m256i *)(a + (size_t)t * qs + (off))); \
            s0[t] = _mm256_add_epi16(s0[t], _mm256_maddubs_epi16(c0, x));                        \
            s1[t] = _mm256_add_epi16(s1[t], _mm256_maddubs_epi16(c1, x));                        \
        }                                                                                        \
        NB_KEEP_IN_REGISTERS(s0, s1);                                                            \
    }
            NB_SLICE(6, 0)
            NB_SLICE(4, 32)
            NB_SLICE(2, 64)
            NB_SLICE(0, 96)
#undef NB_SLICE
        }
        for (int t = 0; t < 4; t++) {
            acc0[t] = _mm256_add_epi32(acc0[t], _mm256_madd_epi16(s0[t], ones));
            acc1[t] = _mm256_add_epi32(acc1[t], _mm256_madd_epi16(s1[t], ones));
        }
    }
    for (int t = 0; t < 4; t++) {
        out0[t] = hsum_i32(acc0[t]);
        out1[t] = hsum_i32(acc1[t]);
    }
}

#define NB_TILE 8

NB_AVX2 void nb_ternary_avx2(const uint8_t *w, int cols, int r0, int r1, const int8_t *q,
                             const int32_t *qsum, const float *fac, int ntok, float *y, int ys,
                             int accumulate) {
    const int nblk = cols / 128;
    const size_t row_bytes = (size_t)cols / 4;
    int32_t d[NB_TILE];
    int t0 = 0;
    if (ntok >= 4) {
        for (; t0 + 4 <= ntok; t0 += 4) {
            const int8_t *qt = q + (size_t)t0 * cols;
            int r = r0;
            for (; r + 2 <= r1; r += 2) {
                int32_t d0[4], d1[4];
                const uint8_t *wr = w + (size_t)r * row_bytes;
                tile_2x4(wr, wr + row_bytes, nblk, qt, (size_t)cols, d0, d1);
                for (int t = 0; t < 4; t++) {
                    store_out(&y[(size_t)(t0 + t) * ys + r], d0[t], qsum[t0 + t], fac[t0 + t], accumulate);
                    store_out(&y[(size_t)(t0 + t) * ys + r + 1], d1[t], qsum[t0 + t], fac[t0 + t], accumulate);
                }
            }
            if (r < r1) {
                row_tile(w + (size_t)r * row_bytes, nblk, qt, (size_t)cols, 4, d);
                for (int t = 0; t < 4; t++)
                    store_out(&y[(size_t)(t0 + t) * ys + r], d[t], qsum[t0 + t], fac[t0 + t], accumulate);
            }
        }
    }
    for (; t0 < ntok; t0 += NB_TILE) {
        int nt = ntok - t0 < NB_TILE ? ntok - t0 : NB_TILE;
        const int8_t *qt = q + (size_t)t0 * cols;
        for (int r = r0; r < r1; r++) {
            const uint8_t *wr = w + (size_t)r * row_bytes;
            switch (nt) {
            case 8: row_tile(wr, nblk, qt, (size_t)cols, 8, d); break;
            case 7: row_tile(wr, nblk, qt, (size_t)cols, 7, d); break;
            case 6: row_tile(wr, nblk, qt, (size_t)cols, 6, d); break;
            case 5: row_tile(wr, nblk, qt, (size_t)cols, 5, d); break;
            case 4: row_tile(wr, nblk, qt, (size_t)cols, 4, d); break;
            case 3: row_tile(wr, nblk, qt, (size_t)cols, 3, d); break;
            case 2: row_tile(wr, nblk, qt, (size_t)cols, 2, d); break;
            default: row_tile(wr, nblk, qt, (size_t)cols, 1, d); break;
            }
            for (int t = 0; t < nt; t++)
                store_out(&y[(size_t)(t0 + t) * ys + r], d[t], qsum[t0 + t], fac[t0 + t], accumulate);
        }
    }
}
#endif
