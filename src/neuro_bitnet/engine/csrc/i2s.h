/* The I2_S ternary layout and the one 2-bit unpack every ternary kernel uses.
 *
 * A row of `cols` weights is cols/128 blocks of 32 bytes; byte j of a block holds the codes of
 * weights j, 32+j, 64+j, 96+j (slices k = 0..3) in bits 7:6, 5:4, 3:2, 1:0. Code = w + 1, so a
 * dot product with the codes is corrected by subtracting the sum of the activations once.
 */
#ifndef NB_I2S_H
#define NB_I2S_H

#include <stdint.h>

#include "simd.h"

/* Code (0..2; 3 is invalid) of weight 32 * k + j of a block, from its byte j. */
static inline int i2s_code(uint8_t byte, int k) { return (byte >> (6 - 2 * k)) & 3; }

#if defined(__x86_64__) || defined(__i386__)
/* The 32 codes of slice k of a block (weights 32k .. 32k + 31, in order) from its 32 bytes.
 * k is a constant where this is inlined: one shift (none for k = 3) and one and. */
NB_AVX2_INLINE __m256i i2s_codes(__m256i block, int k) {
    const __m256i v = k == 3 ? block : _mm256_srli_epi16(block, 6 - 2 * k);
    return _mm256_and_si256(v, _mm256_set1_epi8(3));
}
#endif

#endif
