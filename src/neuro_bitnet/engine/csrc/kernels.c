/* The kernel tables: portable C, and AVX2 when the running CPU has AVX2, FMA and F16C. */
#include "cpu.h"
#include "kernels.h"

static const nb_kernels portable = {
    "portable", nb_ternary_portable, nb_dot_row_portable, nb_dot_i8_portable, nb_dot_q4_portable,
    nb_attn_scores_portable, nb_attn_values_portable, nb_rmsnorm_portable,
    nb_quantize_portable, nb_exp_sum_portable,
    nb_to_f32_portable,
};

const nb_kernels *nb_kernels_portable(void) { return &portable; }

#if defined(__x86_64__) || defined(__i386__)
static const nb_kernels avx2 = {
    "avx2", nb_ternary_avx2, nb_dot_row_avx2, nb_dot_i8_avx2, nb_dot_q4_avx2,
    nb_attn_scores_avx2, nb_attn_values_avx2, nb_rmsnorm_avx2, nb_quantize_avx2,
    nb_exp_sum_avx2,
    nb_to_f32_avx2,
};

const nb_kernels *nb_kernels_avx2(void) {
    return cpu_has_avx2() && cpu_has_fma() && cpu_has_f16c() ? &avx2 : 0;
}
#else
const nb_kernels *nb_kernels_avx2(void) { return 0; }
#endif
