/* Runtime CPU feature detection (only the features some kernel set dispatches on). */
#ifndef NB_CPU_H
#define NB_CPU_H

int cpu_has_avx2(void);
int cpu_has_fma(void);
int cpu_has_f16c(void);
int cpu_has_avx512vnni(void);
int cpu_has_amx(void);

#endif
