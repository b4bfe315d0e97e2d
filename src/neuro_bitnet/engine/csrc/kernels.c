/* The kernel tables: portable C; AVX2 when the running CPU has AVX2, FMA and F16C; AVX2 with the
 * AVX-512 VNNI matrix kernels when it also has AVX-512 VNNI (F, BW, VL); those with the AMX-INT8
 * ternary kernel when it also has AMX and the OS lets this process use it. */
#include <string.h>

#include "cpu.h"
#include "kernels.h"

static const nb_kernels portable = NB_KERNEL_TABLE(portable);

#if defined(__x86_64__) || defined(__i386__)
static const nb_kernels avx2 = NB_KERNEL_TABLE(avx2);

static const nb_kernels avx512vnni = NB_KERNEL_TABLE_MATRIX("avx512vnni", avx2, avx512vnni, avx512vnni, 0);

#if defined(__x86_64__)
static const nb_kernels amx = NB_KERNEL_TABLE_MATRIX("amx", avx2, amx, avx512vnni, nb_ternary_pack_amx);
#endif

static const nb_kernels *avx2_if_supported(void) {
    return cpu_has_avx2() && cpu_has_fma() && cpu_has_f16c() ? &avx2 : 0;
}

static const nb_kernels *avx512vnni_if_supported(void) {
    return avx2_if_supported() && cpu_has_avx512vnni() ? &avx512vnni : 0;
}

static const nb_kernels *amx_if_supported(void) {
#if defined(__x86_64__)
    return avx512vnni_if_supported() && cpu_has_amx() ? &amx : 0;
#else
    return 0;
#endif
}
#else
static const nb_kernels *amx_if_supported(void) { return 0; }
static const nb_kernels *avx2_if_supported(void) { return 0; }
static const nb_kernels *avx512vnni_if_supported(void) { return 0; }
#endif

static const nb_kernels *portable_always(void) { return &portable; }

/* Every set, best first ("auto" takes the first the CPU runs); a new ISA adds one row. */
static const struct {
    const char *name;
    const nb_kernels *(*get)(void); /* NULL when this build or CPU cannot run the set */
} SETS[] = {
    {"amx", amx_if_supported},
    {"avx512vnni", avx512vnni_if_supported},
    {"avx2", avx2_if_supported},
    {"portable", portable_always},
};

#define NSETS (int)(sizeof(SETS) / sizeof(SETS[0]))

const nb_kernels *nb_kernels_select(const char *isa, const char **err) {
    const int any = strcmp(isa, "auto") == 0;
    for (int i = 0; i < NSETS; i++) {
        if (!any && strcmp(isa, SETS[i].name) != 0) continue;
        const nb_kernels *k = SETS[i].get();
        if (k) return k;
        if (!any) {
            *err = "this CPU (or this build) cannot run these kernels";
            return 0;
        }
    }
    *err = "unknown kernel set: expected 'auto', 'amx', 'avx512vnni', 'avx2' or 'portable'";
    return 0;
}
