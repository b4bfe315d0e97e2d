/* The amx kernel set's ternary kernel: zmm VNNI tiles for steps of 1..4 tokens, AMX-INT8 tiles
 * for more (x86-64; the I2_S layout is in i2s.h, the shared tile pieces in ternary_tiles.h). */
#include <stddef.h>
#include <string.h>

#include "i2s.h"
#include "kernels.h"
#include "simd.h"
#include "ternary_tiles.h"

#if defined(__x86_64__)
/* ---- The VNNI tiles on zmm registers, for the amx set's steps of 1..4 tokens: one load takes two
 * blocks of a row, one vpdpbusd 64 products. The CPUs with AMX have two 512-bit multiply-add
 * ports; Zen 4 splits a zmm instruction in two, so the avx512vnni set keeps the ymm tiles. The
 * activations come laid out by zmm_pack (once per matmul), so that one aligned load gives the
 * two blocks' slice: loading the halves and inserting one took the port the products need.
 * benchmarks/ternary_stream.py, 2B shapes, against the ymm tiles: 1 token 0.95x, 2 0.82x, 3
 * 0.86x, 4 0.84x the time. Same sums, so the same results. */

/* Per token, per block pair p, per slice k: 64 bytes, block 2p's activations of slice k, then
 * block 2p + 1's (zeros past an odd last block). A token takes zmm_token_bytes(cols). */
static size_t zmm_token_bytes(int cols) { return (size_t)(cols / 128 + 1) / 2 * 256; }

static void zmm_pack(const int8_t *q, int cols, int ntok, int8_t *out) {
    const int nblk = cols / 128, pairs = (nblk + 1) / 2;
    for (int t = 0; t < ntok; t++)
        for (int p = 0; p < pairs; p++)
            for (int k = 0; k < 4; k++) {
                int8_t *d = out + ((size_t)t * pairs * 4 + (size_t)p * 4 + k) * 64;
                memcpy(d, q + (size_t)t * cols + 256 * p + 32 * k, 32);
                if (2 * p + 1 < nblk) memcpy(d + 32, q + (size_t)t * cols + 256 * p + 128 + 32 * k, 32);
                else memset(d + 32, 0, 32);
            }
}

/* The dots of an R x T tile, as vnni_tile_dots, q laid out by zmm_pack (qs bytes a token); an
 * odd last block runs in the low halves. */
NB_VNNI_INLINE void zmm_tile_dots(const uint8_t *w, size_t row_bytes, int nblk, const int8_t *q,
                                  size_t qs, int R, int T, int PF, int32_t *out) {
    __m512i acc[NB_VNNI_R][NB_VNNI_T];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_si512();
    const __m512i three = _mm512_set1_epi8(3);
    for (int b = 0; b < nblk; b += 2) {
        const int two = b + 1 < nblk;
        __m512i v[NB_VNNI_R];
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * row_bytes + (size_t)b * 32;
            if (PF) _mm_prefetch((const char *)wb + NB_VNNI_PREFETCH, NB_VNNI_PREFETCH_HINT);
            v[i] = two ? _mm512_loadu_si512(wb) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)wb));
        }
        const int8_t *a = q + (size_t)b * 128; /* pair b / 2: 256 bytes a token */
        for (int k = 0; k < 4; k++) {
            __m512i c[NB_VNNI_R];
            for (int i = 0; i < R; i++)
                c[i] = _mm512_and_si512(k == 3 ? v[i] : _mm512_srli_epi16(v[i], 6 - 2 * k), three);
            for (int t = 0; t < T; t++) {
                const __m512i x = _mm512_load_si512(a + (size_t)t * qs + 64 * k);
                for (int i = 0; i < R; i++) acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], c[i], x);
            }
            for (int i = 0; i < R; i++) /* as in vnni_tile_dots */
                for (int t = 0; t < T; t++) __asm__("" : "+v"(acc[i][t]));
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i * T + t] = _mm512_reduce_add_epi32(acc[i][t]);
}

NB_DEFINE_4ROW_TILES(zmm_tile, zmm_tile_dots, NB_VNNI, NB_VNNI_INLINE)

/* As nb_ternary_avx512vnni, on the zmm tiles: q laid out by zmm_pack. */
NB_VNNI static void ternary_zmm(const uint8_t *w, int cols, int r0, int r1, const int8_t *q,
                                const int32_t *qsum, const float *fac, int ntok, float *y, int ys,
                                int accumulate) {
    const tile_args a = {.w = w, .row_bytes = (size_t)cols / 4, .nblk = cols / 128, .qs = zmm_token_bytes(cols),
                         .ys = ys, .accumulate = accumulate};
    run_token_groups(a, r0, r1, q, qsum, fac, y, ntok, NB_VNNI_T, zmm_tile_FIRST_TILES, zmm_tile_TILES);
}

/* ---- AMX-INT8 (Sapphire Rapids and later): TDPBUSD multiplies a 16 x 64 tile of u8 codes by a
 * 64 x N tile of s8 activations (N <= 16 tokens) into 16 x N int32 sums. With several tokens a
 * step that moves the bound from vpdpbusd to unpacking the codes and to memory. The codes are
 * unpacked into L1 for 64 columns at a time (a tile load cannot take them from registers); the
 * activations are laid out once per matmul by nb_ternary_pack_amx, and each activation tile is
 * loaded once for AMX_RT row tiles (reloading it for every row tile cost more than the codes).
 *
 * The 64 columns of a chunk are not in row order, but in the order one 64-byte load of two
 * blocks unpacks to: chunk 4p + s holds slice s of blocks 2p and 2p + 1 (weights 256p + 32s + e
 * and 256p + 128 + 32s + e, e < 32); an odd last block makes two chunks in row order. The pack
 * step lays the activations out in the same order. */
#define AMX_ROWS 16 /* rows of a code tile */
#define AMX_TOK 16  /* the most tokens of an activation tile */
#define AMX_RT 4    /* row tiles per activation tile load (sum tiles 0..3) */
#define AMX_GROUPS 4 /* token groups per pass of amx_tile_groups (sum tiles 0..3) */

/* Tokens from which the amx set takes the AMX path; fewer run the zmm tiles, which stream the
 * weights faster (benchmarks/ternary_stream.py, 2B shapes: 4 tokens 28.3 ms zmm against ~35
 * AMX; 5 tokens 37.3 against 35.1, 8 tokens 46.6 against 36.4). */
#ifndef NB_AMX_MIN_TOKENS
#define NB_AMX_MIN_TOKENS 5
#endif

/* Tokens per activation tile: all of them up to 16, else 16 (the last tile zero-padded). */
static inline int amx_group_tokens(int ntok) { return ntok < AMX_TOK ? ntok : AMX_TOK; }

/* The first column of the 4 activations in dword i (0..15) of chunk c. */
static inline int amx_chunk_col(int nblk, int c, int i) {
    const int pairs = nblk / 2;
    if (c < 4 * pairs) {
        const int p = c / 4, s = c % 4;
        return 256 * p + 32 * s + (i < 8 ? 4 * i : 128 + 4 * (i - 8));
    }
    return 128 * (nblk - 1) + 64 * (c - 4 * pairs) + 4 * i;
}

/* Fewer than NB_AMX_MIN_TOKENS tokens: zmm_pack's layout. Otherwise token group g, chunk c at
 * pk + (g * cols / 64 + c) * 64 * N (N = amx_group_tokens): 16 rows (dwords i) of N tokens' 4
 * activations each, as TDPBUSD reads its second operand. */
int nb_ternary_pack_amx(const int8_t *q, int cols, int ntok, int8_t *pk) {
    if (ntok < NB_AMX_MIN_TOKENS) { /* the zmm tiles' layout */
        zmm_pack(q, cols, ntok, pk);
        return 1;
    }
    const int nblk = cols / 128, nch = cols / 64, N = amx_group_tokens(ntok), groups = (ntok + N - 1) / N;
    int32_t *dst = (int32_t *)pk;
    for (int g = 0; g < groups; g++)
        for (int c = 0; c < nch; c++)
            for (int i = 0; i < 16; i++) {
                const int col = amx_chunk_col(nblk, c, i);
                for (int n = 0; n < N; n++, dst++) {
                    const int t = g * N + n;
                    *dst = 0;
                    if (t < ntok) memcpy(dst, q + (size_t)t * cols + col, 4);
                }
            }
    return 1;
}

#define NB_AMX __attribute__((target(NB_VNNI_TARGET ",amx-tile,amx-int8")))
#define NB_AMX_INLINE __attribute__((target(NB_VNNI_TARGET ",amx-tile,amx-int8"), always_inline)) static inline

/* Tiles 0..3: int32 sums (16 rows x N tokens); 4, 5: codes (16 x 64); 6, 7: activations
 * (16 x 4N bytes). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

NB_AMX static void amx_configure(int N) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = (uint16_t)(i == 4 || i == 5 ? 64 : 4 * N);
    }
    _tile_loadconfig(&cfg);
}

/* Chunk s of block pair p (or, odd, of the last block b: s = 0, 1 its halves) of R rows at wt,
 * into codes (R rows of 64 bytes). The first slice of a pair prefetches the same number of
 * lines of the rows after these, in address order (to L2, as the VNNI tiles): by the end of
 * the pair loop all of them are asked for. */
NB_AMX_INLINE void amx_unpack(const uint8_t *wt, size_t row_bytes, int R, int p, int s, int last,
                              uint8_t codes[][64]) {
    const char *ahead = (const char *)wt + (size_t)R * row_bytes + (size_t)p * R * 64;
    for (int i = 0; i < R; i++) {
        const uint8_t *row = wt + (size_t)i * row_bytes;
        if (last) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(row + (size_t)p * 32));
            _mm256_store_si256((__m256i *)codes[i], i2s_codes(v, 2 * s));
            _mm256_store_si256((__m256i *)(codes[i] + 32), i2s_codes(v, 2 * s + 1));
            continue;
        }
        if (s == 0) _mm_prefetch(ahead + i * 64, _MM_HINT_T1);
        const __m512i v = _mm512_loadu_si512(row + (size_t)p * 64);
        const __m512i x = s == 3 ? v : _mm512_srli_epi16(v, 6 - 2 * s);
        _mm512_store_si512(codes[i], _mm512_and_si512(x, _mm512_set1_epi8(3)));
    }
}

/* gcc's tile intrinsics are asm statements that do not say they read or write memory: without
 * this barrier around them, -O3 moves (or drops) the stores of the codes a tile load reads,
 * and reads the sums a tile store wrote before it ran. */
#define AMX_MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

/* One chunk into the RT row tiles' sums: the activation tile once, a code tile per row tile.
 * Tile numbers are constants (the intrinsics want them); code and activation tiles take turns
 * so that a load does not wait for the product still reading the other. */
#define AMX_ROW_TILE(C, A, B, j)                                   \
    if (RT > j) {                                                  \
        _tile_loadd(A, codes[(j) * AMX_ROWS], 64);                 \
        _tile_dpbusd(C, A, B);                                     \
    }
#define AMX_CHUNK(B)                                               \
    do {                                                           \
        AMX_MEMORY_BARRIER();                                      \
        _tile_loadd(B, act, 4 * N);                                \
        AMX_ROW_TILE(0, 4, B, 0) AMX_ROW_TILE(1, 5, B, 1)          \
        AMX_ROW_TILE(2, 4, B, 2) AMX_ROW_TILE(3, 5, B, 3)          \
        AMX_MEMORY_BARRIER();                                      \
    } while (0)

/* Sum tile c (0..3) into sums, once the previous sums there have been read. */
NB_AMX_INLINE void amx_sums(int c, int32_t sums[AMX_ROWS][AMX_TOK]) {
    AMX_MEMORY_BARRIER();
    switch (c) {
    case 0: _tile_stored(0, sums, 64); break;
    case 1: _tile_stored(1, sums, 64); break;
    case 2: _tile_stored(2, sums, 64); break;
    default: _tile_stored(3, sums, 64); break;
    }
    AMX_MEMORY_BARRIER();
}

/* y for rows [r, r + 16), tokens t0 .. t0 + nt - 1, from the int32 sums (16 rows x 16, of which
 * nt used): each token's 16 rows as one vector, the arithmetic of store_out. */
NB_AMX_INLINE void amx_store(const tile_args *a, int r, int t0, int nt, const int32_t sums[AMX_ROWS][AMX_TOK]) {
    const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(AMX_TOK));
    for (int n = 0; n < nt; n++) {
        const int t = t0 + n;
        const __m512i d = _mm512_i32gather_epi32(_mm512_add_epi32(rows, _mm512_set1_epi32(n)), &sums[0][0], 4);
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(d, _mm512_set1_epi32(a->qsum[t]))),
                                 _mm512_set1_ps(a->fac[t]));
        float *yt = a->y + (size_t)t * a->ys + r;
        if (a->accumulate) v = _mm512_add_ps(_mm512_loadu_ps(yt), v);
        _mm512_storeu_ps(yt, v);
    }
}

/* Rows [r, r + 16 RT) for one token group (ntok <= 16 tokens, N = ntok). */
NB_AMX_INLINE void amx_rows(const tile_args *a, int r, int RT, const int8_t *pk, int N) {
    const int nblk = a->nblk, pairs = nblk / 2, R = RT * AMX_ROWS;
    const uint8_t *wt = a->w + (size_t)r * a->row_bytes;
    _Alignas(64) uint8_t buf[2][AMX_RT * AMX_ROWS][64]; /* one chunk's codes while the other's are read */
    _Alignas(64) int32_t sums[AMX_ROWS][AMX_TOK];
    const int8_t *act = pk;
    _tile_zero(0);
    if (RT > 1) _tile_zero(1);
    if (RT > 2) _tile_zero(2);
    if (RT > 3) _tile_zero(3);
    for (int p = 0; p < pairs; p++)
        for (int s = 0; s < 4; s++, act += 64 * N) {
            uint8_t(*codes)[64] = buf[s & 1];
            amx_unpack(wt, a->row_bytes, R, p, s, 0, codes);
            if (s & 1) AMX_CHUNK(7);
            else AMX_CHUNK(6);
        }
    if (nblk % 2)
        for (int s = 0; s < 2; s++, act += 64 * N) {
            uint8_t(*codes)[64] = buf[s];
            amx_unpack(wt, a->row_bytes, R, nblk - 1, s, 1, codes);
            if (s) AMX_CHUNK(7);
            else AMX_CHUNK(6);
        }
    for (int j = 0; j < RT; j++) {
        amx_sums(j, sums);
        amx_store(a, r + j * AMX_ROWS, 0, N, sums);
    }
}
#undef AMX_ROW_TILE
#undef AMX_CHUNK

/* One group's product for a chunk: its activation tile, then the sum tile of the group. */
#define AMX_GROUP(C, B, A, g)                                              \
    if (G > g) {                                                           \
        _tile_loadd(B, act + (size_t)(g) * group_bytes, 4 * N);            \
        _tile_dpbusd(C, A, B);                                             \
    }
#define AMX_CHUNK_GROUPS(A, codes)                                         \
    do {                                                                   \
        AMX_MEMORY_BARRIER();                                              \
        _tile_loadd(A, codes, 64);                                         \
        AMX_GROUP(0, 6, A, 0) AMX_GROUP(1, 7, A, 1)                        \
        AMX_GROUP(2, 6, A, 2) AMX_GROUP(3, 7, A, 3)                        \
        AMX_MEMORY_BARRIER();                                              \
    } while (0)

/* Rows [r, r + 16) for token groups g0 .. g0 + G - 1 (G <= 4; prompts of more than 16 tokens):
 * each code tile is unpacked once and multiplied by the G groups' activation tiles into sum
 * tiles 0..G-1. At 64 tokens 1.57x faster than amx_rows once per group (77.6 against 121.7 ms
 * in benchmarks/ternary_stream.py), at 17 and 32 tokens 1.16x. */
NB_AMX_INLINE void amx_tile_groups(const tile_args *a, int r, const int8_t *pk, int g0, int G, int N, int ntok) {
    const int nblk = a->nblk, nch = nblk * 2, pairs = nblk / 2;
    const uint8_t *wt = a->w + (size_t)r * a->row_bytes;
    const size_t group_bytes = (size_t)nch * 64 * N;
    _Alignas(64) uint8_t buf[2][AMX_ROWS][64];
    _Alignas(64) int32_t sums[AMX_ROWS][AMX_TOK];
    const int8_t *act = pk + (size_t)g0 * group_bytes;
    _tile_zero(0);
    _tile_zero(1);
    if (G > 2) _tile_zero(2);
    if (G > 3) _tile_zero(3);
    for (int p = 0; p < pairs; p++)
        for (int s = 0; s < 4; s++, act += 64 * N) {
            amx_unpack(wt, a->row_bytes, AMX_ROWS, p, s, 0, buf[s & 1]);
            if (s & 1) AMX_CHUNK_GROUPS(5, buf[1]);
            else AMX_CHUNK_GROUPS(4, buf[0]);
        }
    if (nblk % 2)
        for (int s = 0; s < 2; s++, act += 64 * N) {
            amx_unpack(wt, a->row_bytes, AMX_ROWS, nblk - 1, s, 1, buf[s]);
            if (s) AMX_CHUNK_GROUPS(5, buf[1]);
            else AMX_CHUNK_GROUPS(4, buf[0]);
        }
    for (int g = 0; g < G; g++) {
        amx_sums(g, sums);
        const int t0 = (g0 + g) * N;
        amx_store(a, r, t0, ntok - t0 < N ? ntok - t0 : N, sums);
    }
}
#undef AMX_GROUP
#undef AMX_CHUNK_GROUPS

/* Fewer than NB_AMX_MIN_TOKENS tokens: the zmm tiles. Otherwise whole 16-row tiles through
 * AMX: one token group (decode steps of 5..16 sequences) in runs of AMX_RT tiles that share
 * each activation tile, then single tiles; several groups (prompts) a tile at a time for all
 * groups; the rows left
 * (r1 - r0 not a multiple of 16) through the ymm VNNI tiles. Without pk (a caller that ran no
 * pack step), the ymm VNNI tiles. */
NB_AMX void nb_ternary_amx(NB_TERNARY_ARGS) {
    int r = r0;
    if (pk && ntok < NB_AMX_MIN_TOKENS) {
        ternary_zmm(w, cols, r0, r1, pk, qsum, fac, ntok, y, ys, accumulate);
        return;
    }
    if (pk) {
        const tile_args a = {.w = w, .row_bytes = (size_t)cols / 4, .nblk = cols / 128, .qs = (size_t)cols,
                             .qsum = qsum, .fac = fac, .y = y, .ys = ys, .accumulate = accumulate};
        const int N = amx_group_tokens(ntok), groups = (ntok + N - 1) / N;
        amx_configure(N);
        if (groups > 1) {
            for (; r + AMX_ROWS <= r1; r += AMX_ROWS)
                for (int g0 = 0; g0 < groups; g0 += AMX_GROUPS)
                    amx_tile_groups(&a, r, pk, g0, groups - g0 < AMX_GROUPS ? groups - g0 : AMX_GROUPS, N, ntok);
        } else {
            for (; r + AMX_RT * AMX_ROWS <= r1; r += AMX_RT * AMX_ROWS) amx_rows(&a, r, AMX_RT, pk, N);
            for (; r + AMX_ROWS <= r1; r += AMX_ROWS) amx_rows(&a, r, 1, pk, N);
        }
        _tile_release(); /* the thread's tile state back to its initial, unsaved, form */
    }
    if (r < r1) nb_ternary_avx512vnni(w, cols, r, r1, q, NULL, qsum, fac, ntok, y, ys, accumulate);
}
#endif
