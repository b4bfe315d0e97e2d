/* I2_S ternary x int8 matrix kernels: portable C, AVX2 and AVX-512 VNNI (the layout is in i2s.h;
 * the amx set's kernels are in ternary_amx.c). */
#include <stddef.h>

#include "i2s.h"
#include "kernels.h"
#include "simd.h"
#include "ternary_tiles.h"

static int32_t row_dot_portable(const uint8_t *w, int nblk, const int8_t *q) {
    int32_t acc = 0;
    for (int b = 0; b < nblk; b++, w += 32, q += 128) {
        for (int j = 0; j < 32; j++) {
            const uint8_t v = w[j];
            acc += i2s_code(v, 0) * q[j] + i2s_code(v, 1) * q[32 + j] + i2s_code(v, 2) * q[64 + j] +
                   i2s_code(v, 3) * q[96 + j];
        }
    }
    return acc;
}

void nb_ternary_portable(NB_TERNARY_ARGS) {
    (void)pk;
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
#ifndef NB_PREFETCH
#define NB_PREFETCH 4096
#endif
#ifndef NB_PREFETCH_HINT
#define NB_PREFETCH_HINT _MM_HINT_T0
#endif

/* maddubs results are summed as int16 over up to NB_GROUP blocks before one widening madd: per
 * lane a block adds at most 4 * 2 * 3 * 128 = 3072 (even for the invalid code 3), so 8 blocks
 * stay below 32767. */
#define NB_GROUP 8

/* The largest tile: R rows x T tokens of int16 sums and as many int32 ones; 16 ymm registers
 * hold those, the R unpacked code vectors and one activation vector. */
#define NB_TILE_R 2
#define NB_TILE_T 4

/* An empty asm that "modifies" the sums: the compiler must hold them in registers here, so it
 * cannot reassociate the int16 sums into trees of temporaries (gcc does, and then spills half
 * of them to the stack on every block). One asm for a full 2 x 4 tile: with one per sum, gcc
 * adds register moves to that loop (95 instructions a block instead of 88). */
NB_AVX2_INLINE void keep_in_registers(__m256i s[NB_TILE_R][NB_TILE_T], int R, int T) {
    if (R == 2 && T == 4)
        __asm__("" : "+x"(s[0][0]), "+x"(s[0][1]), "+x"(s[0][2]), "+x"(s[0][3]), "+x"(s[1][0]),
                "+x"(s[1][1]), "+x"(s[1][2]), "+x"(s[1][3]));
    else
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) __asm__("" : "+x"(s[i][t]));
}

/* The dots of an R-row x T-token tile: out[i * T + t] = sum_k code(row i)[k] * q[t * qs + k],
 * row i at w + i * row_bytes.
 * Slice by slice, each unpacked code vector serves T tokens and each activation load R rows:
 * prefill, bound by activation loads from L2, wants R > 1 (2 x 4 halved that traffic against
 * 1 x 8). A tile that streams the weights from memory (PF: one-row tiles, the decode path, and
 * the first token group of a call, which reads its rows first) is bound by memory latency: it
 * prefetches them well ahead (past the row, into the rows the next call reads); the later
 * groups find the rows in cache. R, T, PF are constants where this is inlined (the tiles
 * below), so the loops unroll and the sums stay in registers. */
NB_AVX2_INLINE void tile_dots(const uint8_t *w, size_t row_bytes, int nblk, const int8_t *q,
                              size_t qs, int R, int T, int PF, int32_t *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[NB_TILE_R][NB_TILE_T], s[NB_TILE_R][NB_TILE_T];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nblk; b0 += NB_GROUP) {
        const int b1 = b0 + NB_GROUP < nblk ? b0 + NB_GROUP : nblk;
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) s[i][t] = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++) {
            __m256i v[NB_TILE_R];
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + (size_t)b * 32;
                if (PF) _mm_prefetch((const char *)wb + NB_PREFETCH, NB_PREFETCH_HINT);
                v[i] = _mm256_loadu_si256((const __m256i *)wb);
            }
            const int8_t *a = q + (size_t)b * 128;
            for (int k = 0; k < 4; k++) {
                __m256i c[NB_TILE_R];
                for (int i = 0; i < R; i++) c[i] = i2s_codes(v[i], k);
                for (int t = 0; t < T; t++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(a + (size_t)t * qs + 32 * k));
                    for (int i = 0; i < R; i++) s[i][t] = _mm256_add_epi16(s[i][t], _mm256_maddubs_epi16(c[i], x));
                }
                keep_in_registers(s, R, T);
            }
        }
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc[i][t] = _mm256_add_epi32(acc[i][t], _mm256_madd_epi16(s[i][t], ones));
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i * T + t] = hsum_i32(acc[i][t]);
}

/* Whole R x T tiles from row r0 while they fit in [r0, r1); returns the first row left. */
NB_AVX2_INLINE int tile_rows(const tile_args *args, int r0, int r1, int R, int T, int PF) {
    const tile_args a = *args; /* a local copy: the stores to y cannot alias it */
    int32_t d[NB_TILE_R * NB_TILE_T];
    int r = r0;
    for (; r + R <= r1; r += R) {
        tile_dots(a.w + (size_t)r * a.row_bytes, a.row_bytes, a.nblk, a.q, a.qs, R, T, PF, d);
        store_tile(&a, r, R, T, d);
    }
    return r;
}

/* tile_1xT (always prefetching), and tile_RxT / tile_RxT_pf (R > 1, without and with
 * prefetch), whose rows left over go to tile_1xT: every tile function takes any rows [r0, r1). */
#define NB_DEFINE_ROW_TILE(T) \
    NB_AVX2 static void tile_1x##T(const tile_args *a, int r0, int r1) { tile_rows(a, r0, r1, 1, T, 1); }
#define NB_DEFINE_TILE(R, T, PF, name)                                                         \
    NB_AVX2 static void name(const tile_args *a, int r0, int r1) {                             \
        const int r = tile_rows(a, r0, r1, R, T, PF);                                          \
        if (r < r1) tile_1x##T(a, r, r1);                                                      \
    }
NB_DEFINE_ROW_TILE(1)
NB_DEFINE_ROW_TILE(2)
NB_DEFINE_ROW_TILE(3)
NB_DEFINE_ROW_TILE(4)
NB_DEFINE_TILE(2, 4, 0, tile_2x4)
NB_DEFINE_TILE(2, 4, 1, tile_2x4_pf)
#undef NB_DEFINE_ROW_TILE
#undef NB_DEFINE_TILE

/* The tile for a group of T tokens, T = 1..NB_TILE_T: the kernel runs groups of NB_TILE_T
 * while that many tokens remain, then the tile for the rest; the first group of a call (which
 * streams the rows from memory) takes FIRST_TILES. A new shape (wider prefill tiles,
 * lookup-table kernels) is one more NB_DEFINE_TILE and one entry in each table.
 * Without a prefetching 2 x 4 tile, a batch of 4 decode tokens (several sequences) took longer
 * than one of 3 (which runs the prefetching 1 x 3 tile): 392 against 227 ms a step on the
 * synthetic 2B model, 2 threads. */
static const tile_fn TILES[NB_TILE_T + 1] = {[1] = tile_1x1, [2] = tile_1x2, [3] = tile_1x3, [4] = tile_2x4};
static const tile_fn FIRST_TILES[NB_TILE_T + 1] = {
    [1] = tile_1x1, [2] = tile_1x2, [3] = tile_1x3, [4] = tile_2x4_pf};

NB_AVX2 void nb_ternary_avx2(NB_TERNARY_ARGS) {
    (void)pk;
    const tile_args a = {.w = w, .row_bytes = (size_t)cols / 4, .nblk = cols / 128, .qs = (size_t)cols,
                         .ys = ys, .accumulate = accumulate};
    run_token_groups(a, r0, r1, q, qsum, fac, y, ntok, NB_TILE_T, FIRST_TILES, TILES);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
/* ---- AVX-512 VNNI: vpdpbusd (u8 codes x s8 activations, four products added into each int32
 * lane) replaces maddubs + add + the widening madd; 32 ymm registers hold a bigger tile. One
 * instruction per 32 multiply-adds, two a cycle (Zen 4): the AVX2 pair reaches ~1.35 (measured).
 * Overflow: a lane adds at most 4 * 3 * 128 per instruction, 4 per block: 6912 columns stay
 * below 2^19. The tile shape and prefetch constants are in ternary_tiles.h. */

/* The dots of an R x T tile, as tile_dots (same arguments and order of work). */
NB_VNNI_INLINE void vnni_tile_dots(const uint8_t *w, size_t row_bytes, int nblk, const int8_t *q,
                                   size_t qs, int R, int T, int PF, int32_t *out) {
    __m256i acc[NB_VNNI_R][NB_VNNI_T];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_si256();
    for (int b = 0; b < nblk; b++) {
        __m256i v[NB_VNNI_R];
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * row_bytes + (size_t)b * 32;
            if (PF) _mm_prefetch((const char *)wb + NB_VNNI_PREFETCH, NB_VNNI_PREFETCH_HINT);
            v[i] = _mm256_loadu_si256((const __m256i *)wb);
        }
        const int8_t *a = q + (size_t)b * 128;
        for (int k = 0; k < 4; k++) {
            __m256i c[NB_VNNI_R];
            for (int i = 0; i < R; i++) c[i] = i2s_codes(v[i], k);
            for (int t = 0; t < T; t++) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(a + (size_t)t * qs + 32 * k));
                for (int i = 0; i < R; i++) acc[i][t] = _mm256_dpbusd_epi32(acc[i][t], c[i], x);
            }
            /* As keep_in_registers: without it gcc copies and spills the sums (~1.3x slower). */
            for (int i = 0; i < R; i++)
                for (int t = 0; t < T; t++) __asm__("" : "+v"(acc[i][t]));
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i * T + t] = hsum_i32(acc[i][t]);
}

/* The 4-row tiles for T = 1..4 tokens, without and with prefetch (the first group of a call). */
NB_DEFINE_4ROW_TILES(vnni_tile, vnni_tile_dots, NB_VNNI, NB_VNNI_INLINE)

/* Groups of up to NB_VNNI_T tokens, each through the 4-row tile of its size: a decode step
 * (one token per sequence, 1..8 sequences) and a prefill alike. Four rows give four
 * independent vpdpbusd chains even for one token. */
NB_VNNI void nb_ternary_avx512vnni(NB_TERNARY_ARGS) {
    (void)pk;
    const tile_args a = {.w = w, .row_bytes = (size_t)cols / 4, .nblk = cols / 128, .qs = (size_t)cols,
                         .ys = ys, .accumulate = accumulate};
    run_token_groups(a, r0, r1, q, qsum, fac, y, ntok, NB_VNNI_T, vnni_tile_FIRST_TILES, vnni_tile_TILES);
}
#endif
