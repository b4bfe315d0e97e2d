/* Runtime CPU feature detection: the kernels are chosen once, from what the running CPU has. */
#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
int cpu_has_avx2(void) { return __builtin_cpu_supports("avx2"); }
int cpu_has_fma(void) { return __builtin_cpu_supports("fma"); }
int cpu_has_f16c(void) {
    /* gcc < 11 has no "f16c" name for __builtin_cpu_supports; every AVX2 CPU has F16C. */
    return __builtin_cpu_supports("avx2");
}
/* vpdpbusd on ymm registers: AVX-512 VNNI with VL (and BW, F for the registers and masks). The
 * compiler's check also asks the OS whether it saves the AVX-512 state. */
int cpu_has_avx512vnni(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#else
int cpu_has_avx2(void) { return 0; }
int cpu_has_avx512vnni(void) { return 0; }
int cpu_has_fma(void) { return 0; }
int cpu_has_f16c(void) { return 0; }
#endif
