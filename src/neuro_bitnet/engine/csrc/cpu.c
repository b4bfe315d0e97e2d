/* Runtime CPU feature detection: the kernels are chosen once, from what the running CPU has. */
#define _GNU_SOURCE /* syscall() */
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

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24, 25), their state enabled by the OS (XCR0 bits
 * 17, 18), and Linux's permission for this process to use the tile data (asked once; refused on
 * kernels before 5.16, which cannot save it). */
int cpu_has_amx(void) {
    static int known = -1;
    if (known >= 0) return known;
    unsigned a, b, c, d;
    known = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || (d & (3u << 24)) != (3u << 24)) return known;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return known; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return known;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    known = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return known;
}
#else
int cpu_has_amx(void) { return 0; }
#endif
#else
int cpu_has_amx(void) { return 0; }
int cpu_has_avx2(void) { return 0; }
int cpu_has_avx512vnni(void) { return 0; }
int cpu_has_fma(void) { return 0; }
int cpu_has_f16c(void) { return 0; }
#endif
