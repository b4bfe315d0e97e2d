/* Runtime CPU feature detection. */
#ifndef NB_CPU_H
#define NB_CPU_H

int cpu_has_avx2(void);
int cpu_has_fma(void);
int cpu_has_f16c(void);
int cpu_has_neon(void);

#endif
