/* The kernel tables: portable C, and AVX2 when the running CPU has AVX2, FMA and F16C. */
#include "cpu.h"
#include "kernels.h"

static const nb_kernels portable = NB_KERNEL_TABLE(portable);

const nb_kernels *nb_kernels_portable(void) { return &portable; }

#if defined(__x86_64__) || defined(__i386__)
static const nb_kernels avx2 = NB_KERNEL_TABLE(avx2);

const nb_kernels *nb_kernels_avx2(void) {
    return cpu_has_avx2() && cpu_has_fma() && cpu_has_f16c() ? &avx2 : 0;
}
#else
const nb_kernels *nb_kernels_avx2(void) { return 0; }
#endif
