/* Portable IEEE half / bfloat16 <-> float conversions (to float: exact). */
#ifndef NB_FP16_H
#define NB_FP16_H

#include <stdint.h>
#include <string.h>

static inline float nb_bits_f32(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static inline uint32_t nb_f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static inline float nb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        float f = (float)man * 5.9604644775390625e-8f; /* man * 2^-24, exact */
        return nb_bits_f32(nb_f32_bits(f) | sign);
    }
    if (exp == 31) return nb_bits_f32(sign | 0x7f800000u | (man << 13));
    return nb_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* float -> IEEE half, rounded to nearest even (as F16C and numpy round), except that values
 * beyond the half range saturate to +-65504 instead of becoming infinite (a KV cache row must
 * stay finite: an infinity times a zero weight would be NaN). NaN stays NaN. */
static inline uint16_t nb_f32_to_f16(float f) {
    const uint32_t x = nb_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (ax >= 0x477fe000u) return (uint16_t)(sign | 0x7bffu); /* >= 65504 (and infinity) */
    if (ax >= 0x38800000u) {                                  /* normal: >= 2^-14 */
        uint32_t e = ax - (112u << 23);                       /* rebias the exponent, 127 -> 15 */
        e += 0xfffu + ((e >> 13) & 1u);                       /* round half to even on 13 bits */
        return (uint16_t)(sign | (e >> 13));
    }
    /* subnormal (or zero): round(|f| * 2^24) in units of 2^-24; the scaling is exact and a
     * result of 1024 is the smallest normal's encoding */
    float a = nb_bits_f32(ax) * 16777216.0f;
    a = (a + 12582912.0f) - 12582912.0f; /* round half to even, |a| <= 1024 */
    return (uint16_t)(sign | (uint32_t)a);
}

static inline float nb_bf16_to_f32(uint16_t h) { return nb_bits_f32((uint32_t)h << 16); }

#endif
