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

/* Groups of up to T tokens of a matmul (its arguments in a, activations qs bytes a token), each
 * through the tile of its size: first[n] for the call's first group (which streams the rows
 * from memory, so its tiles prefetch), tiles[n] for the later ones (the rows are in cache). */
static inline void run_token_groups(tile_args a, int r0, int r1, const int8_t *q, const int32_t *qsum,
                                    const float *fac, float *y, int ntok, int T, const tile_fn *first,
                                    const tile_fn *tiles) {
    for (int t0 = 0; t0 < ntok; t0 += T) {
        const int nt = ntok - t0 < T ? ntok - t0 : T;
        a.q = q + (size_t)t0 * a.qs;
        a.qsum = qsum + t0;
        a.fac = fac + t0;
        a.y = y + (size_t)t0 * a.ys;
        (t0 == 0 ? first : tiles)[nt](&a, r0, r1);
    }
}

/* A family of 4-row tiles on a dots function with vnni_tile_dots' arguments (attr: its target):
 * whole 4 x T tiles, then one-row tiles for the rows left, for T = 1..4 without and with
 * prefetch, in the tables prefix##_TILES and prefix##_FIRST_TILES (for run_token_groups). */
#define NB_DEFINE_4ROW_TILES(prefix, dots, attr, inline_attr)                                    \
    inline_attr void prefix##_tiles(const tile_args *args, int r0, int r1, int T, int PF) {      \
        const tile_args a = *args;                                                               \
        int32_t d[4 * 4];                                                                        \
        int r = r0;                                                                              \
        for (; r + 4 <= r1; r += 4) {                                                            \
            dots(a.w + (size_t)r * a.row_bytes, a.row_bytes, a.nblk, a.q, a.qs, 4, T, PF, d);   \
            store_tile(&a, r, 4, T, d);                                                          \
        }                                                                                        \
        for (; r < r1; r++) {                                                                    \
            dots(a.w + (size_t)r * a.row_bytes, a.row_bytes, a.nblk, a.q, a.qs, 1, T, 1, d);    \
            store_tile(&a, r, 1, T, d);                                                          \
        }                                                                                        \
    }                                                                                            \
    attr static void prefix##_4x1(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 1, 0); } \
    attr static void prefix##_4x2(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 2, 0); } \
    attr static void prefix##_4x3(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 3, 0); } \
    attr static void prefix##_4x4(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 4, 0); } \
    attr static void prefix##_4x1_pf(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 1, 1); } \
    attr static void prefix##_4x2_pf(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 2, 1); } \
    attr static void prefix##_4x3_pf(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 3, 1); } \
    attr static void prefix##_4x4_pf(const tile_args *a, int r0, int r1) { prefix##_tiles(a, r0, r1, 4, 1); } \
    static const tile_fn prefix##_TILES[5] = {                                                   \
        [1] = prefix##_4x1, [2] = prefix##_4x2, [3] = prefix##_4x3, [4] = prefix##_4x4};         \
    static const tile_fn prefix##_FIRST_TILES[5] = {                                             \
        [1] = prefix##_4x1_pf, [2] = prefix##_4x2_pf, [3] = prefix##_4x3_pf, [4] = prefix##_4x4_pf};

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
