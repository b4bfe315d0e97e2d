/* Portable IEEE half / bfloat16 <-> float conversions (exact decode, round-to-nearest-even encode). */
#ifndef NB_FP16_H
#define NB_FP16_H

#include <math.h>
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

/* Round-to-nearest-even, same result as F16C's vcvtps2ph (after Maratyszcza's FP16 library). */
static inline uint16_t nb_f32_to_f16(float f) {
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    uint32_t w = nb_f32_bits(f);
    uint32_t shl1_w = w + w;
    uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xff000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = nb_bits_f32((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = nb_f32_bits(base);
    uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
    uint32_t mantissa_bits = bits & 0x00000fffu;
    uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

static inline float nb_bf16_to_f32(uint16_t h) { return nb_bits_f32((uint32_t)h << 16); }

#endif
