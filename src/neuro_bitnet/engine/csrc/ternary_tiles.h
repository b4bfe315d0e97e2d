/* What the ternary tile kernels share (ternary_kernels.c: portable, AVX2, AVX-512 VNNI;
 * ternary_amx.c: the amx set's zmm and AMX tiles): the output rule and the tile arguments. */
#ifndef NB_TERNARY_TILES_H
#define NB_TERNARY_TILES_H

#include <stddef.h>
#include <stdint.h>

#include "simd.h"

/* y (+)= (dot - qsum) * fac: every kernel's last step, the same float arithmetic everywhere. */
static inline void store_out(float *dst, int32_t dot, int32_t qsum, float fac, int accumulate) {
    float v = (float)(dot - qsum) * fac;
    *dst = accumulate ? *dst + v : v;
}

#if defined(__x86_64__) || defined(__i386__)
/* What a tile function works on: the matrix, and the first token of its group of tokens. */
typedef struct {
    const uint8_t *w;
    size_t row_bytes;
    int nblk;
    const int8_t *q; /* activations of the group's first token, qs bytes a token */
    size_t qs;
    const int32_t *qsum;
    const float *fac;
    float *y; /* outputs of the group's first token, ys floats a token */
    int ys, accumulate;
} tile_args;

/* One kernel signature for every tile shape: rows [r0, r1) for the T tokens of the shape. */
typedef void (*tile_fn)(const tile_args *a, int r0, int r1);

/* Dots d of R rows from row r, tokens 0..T-1, into y (R, T constants: the loops unroll). */
NB_AVX2_INLINE void store_tile(const tile_args *a, int r, int R, int T, const int32_t *d) {
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++)
            store_out(&a->y[(size_t)t * a->ys + r + i], d[i * T + t], a->qsum[t], a->fac[t], a->accumulate);
}

/* The VNNI tiles (ymm and zmm): 4 rows x up to 4 tokens. */
#define NB_VNNI_R 4
#define NB_VNNI_T 4

/* The streaming tiles prefetch into L2, 8 KB ahead: with T0 at 4 KB (the AVX2 tiles' setting)
 * a 4-row tile is bound by memory latency, ~1.5x slower for one token and ~1.3x for four; L2
 * prefetches let the four row streams run at DRAM bandwidth (benchmarks/ternary_stream.py,
 * which overrides these two to compare). */
#ifndef NB_VNNI_PREFETCH
#define NB_VNNI_PREFETCH 8192
#endif
#ifndef NB_VNNI_PREFETCH_HINT
#define NB_VNNI_PREFETCH_HINT _MM_HINT_T1
#endif
#endif

#endif
