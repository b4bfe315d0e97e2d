/* Driver of benchmarks/ternary_stream.py: the ternary matmuls of one decode step (or a few
 * tokens) of a BitNet b1.58 2B-4T shaped model, on the engine's own kernels and thread pool.
 *
 *   ternary_stream ISA NTOK [FILE [OFFSET]]
 *
 * Streams 30 layers of I2_S weights (q/k/v, o, gate/up, down: 521 MB, well past the caches)
 * from anonymous memory, or from a read-only mapping of FILE from byte OFFSET (page-cache pages,
 * as the engine maps a GGUF file), through the kernel set ISA with NTOK activation rows, split across two
 * threads in chunks as forward.c does. Prints the median and minimum ms of 9 passes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "kernels.h"
#include "threadpool.h"

enum { LAYERS = 30, E = 2560, F = 6912, KV = 640, PASSES = 9 };

/* One matmul of the step: up to three matrices sharing the input (as forward.c's mm_job). */
typedef struct {
    const nb_kernels *k;
    const uint8_t *w[3];
    int rows[3], chunk0[3], cols, nparts, ntok, chunk, total;
    const int8_t *q, *pk; /* pk: q laid out by the set's ternary_pack, or NULL */
    const int32_t *qsum;
    const float *fac;
    float *y;
    atomic_int next;
} job;

static void task(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    job *j = arg;
    for (int c; (c = nb_claim(&j->next, 1)) < j->total;) {
        int p = j->nparts - 1;
        while (c < j->chunk0[p]) p--;
        const int r0 = (c - j->chunk0[p]) * j->chunk, r1 = r0 + j->chunk < j->rows[p] ? r0 + j->chunk : j->rows[p];
        j->k->ternary(j->w[p], j->cols, r0, r1, j->q, j->pk, j->qsum, j->fac, j->ntok, j->y, j->rows[p], 0);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ISA NTOK [FILE]\n", argv[0]);
        return 2;
    }
    const char *err = "";
    const nb_kernels *k = nb_kernels_select(argv[1], &err);
    const int ntok = atoi(argv[2]);
    if (!k || ntok < 1 || ntok > 64) {
        fprintf(stderr, "%s\n", k ? "NTOK must be 1..64" : err);
        return 2;
    }
    /* the matmuls of a layer: parts and rows of each, and their column count */
    static const int parts[4][4] = {{3, E, KV, KV}, {1, E, 0, 0}, {2, F, F, 0}, {1, E, 0, 0}};
    static const int cols[4] = {E, E, E, F};
    size_t layer_bytes = 0;
    for (int s = 0; s < 4; s++)
        for (int p = 0; p < parts[s][0]; p++) layer_bytes += (size_t)parts[s][1 + p] * cols[s] / 4;
    const size_t bytes = layer_bytes * LAYERS;
    const uint8_t *w;
    if (argc > 3) {
        const int fd = open(argv[3], O_RDONLY);
        const size_t offset = argc > 4 ? strtoull(argv[4], NULL, 10) : 0, page = offset / 4096 * 4096;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || (size_t)st.st_size < offset + bytes) {
            fprintf(stderr, "%s: cannot open, or smaller than %zu + %zu bytes\n", argv[3], offset, bytes);
            return 2;
        }
        const uint8_t *map = mmap(NULL, offset - page + bytes, PROT_READ, MAP_SHARED, fd, (off_t)page);
        if (map == MAP_FAILED) return 2;
        w = map + (offset - page);
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < bytes; i += 4096) sink ^= w[i]; /* fault the pages in */
        (void)sink;
    } else {
        uint8_t *a = malloc(bytes);
        if (!a) return 2;
        for (size_t i = 0; i < bytes; i++) a[i] = (uint8_t)(i * 2654435761u >> 24) & 0x55; /* codes 0, 1 */
        w = a;
    }
    int8_t *q = malloc((size_t)F * ntok), *pk = aligned_alloc(64, NB_TERNARY_PACK_BYTES(F, 64));
    float *y = malloc(sizeof(float) * F * ntok), fac[64];
    int32_t qsum[64] = {0};
    for (int i = 0; i < F * ntok; i++) q[i] = (int8_t)(i * 7 % 201 - 100);
    for (int i = 0; i < 64; i++) fac[i] = 1.0f;
    nb_pool *pool = nb_pool_create(2);
    double ms[PASSES];
    for (int pass = 0; pass < PASSES; pass++) {
        const double t0 = now();
        const uint8_t *wp = w;
        for (int l = 0; l < LAYERS; l++)
            for (int s = 0; s < 4; s++) {
                job j = {.k = k, .cols = cols[s], .nparts = parts[s][0], .ntok = ntok, .q = q, .qsum = qsum,
                         .fac = fac, .y = y};
                int all = 0, total = 0;
                for (int p = 0; p < j.nparts; p++) all += parts[s][1 + p];
                /* forward.c's chunk_rows for two threads */
                const int packed = k->ternary_pack && k->ternary_pack(q, j.cols, ntok, pk);
                if (packed) j.pk = pk; /* as forward.c's matmul: once per matmul */
                const int cap = ntok == 1 ? 256 : packed ? 512 : 128, rows = all / 8 / 16 * 16;
                j.chunk = rows < 16 ? 16 : rows > cap ? cap : rows;
                for (int p = 0; p < j.nparts; p++) {
                    j.rows[p] = parts[s][1 + p];
                    j.w[p] = wp;
                    wp += (size_t)j.rows[p] * j.cols / 4;
                    j.chunk0[p] = total;
                    total += (j.rows[p] + j.chunk - 1) / j.chunk;
                }
                j.total = total;
                atomic_init(&j.next, 0);
                nb_pool_run(pool, task, &j);
            }
        ms[pass] = (now() - t0) * 1e3;
    }
    qsort(ms, PASSES, sizeof ms[0], cmp);
    printf("%.3f %.3f\n", ms[PASSES / 2], ms[0]);
    nb_pool_destroy(pool);
    return 0;
}
