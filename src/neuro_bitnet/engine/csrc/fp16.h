/* Portable IEEE half / bfloat16 -> float conversions (exact). */
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

static inline float nb_bf16_to_f32(uint16_t h) { return nb_bits_f32((uint32_t)h << 16); }

#endif
