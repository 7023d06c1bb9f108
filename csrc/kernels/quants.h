/* quants.h - the block layouts of the quantized types and the helpers every kernel file shares.
 *
 * Weight blocks are GGUF's, byte for byte; each type has its own block size (QK4_0, QK8_0, ...),
 * so a type with longer blocks (the K-quants' 256 values) fits beside these. Quantized weights
 * multiply against activations quantized to 8 bits per block of QK8X values (block_q8x).
 */
#ifndef PYLLM_QUANTS_H
#define PYLLM_QUANTS_H

#include <stdint.h>
#include <string.h>

#define QK8_0 32 /* values per Q8_0 block */
#define QK4_0 32 /* values per Q4_0 block */
#define QK4_1 32 /* values per Q4_1 block */
#define QK5_0 32 /* values per Q5_0 block */
#define QK5_1 32 /* values per Q5_1 block */
#define QK8X 32  /* values per block of quantized activations (block_q8x) */

typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;        /* value = qs * d */
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;   /* value = (nibble - 8) * d */
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1; /* value = nibble * d + m */
_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(block_q4_1) == 20, "Q4_1 block is 20 bytes");
/* In a 4-bit block, byte j holds element j in its low nibble and element j + 16 in its high one. */

/* 5-bit blocks: the low 4 bits as in a 4-bit block, the 5th bit of element j is bit j of qh (read
 * as a little-endian uint32). */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;    /* value = (q - 16) * d */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1; /* value = q * d + m */
_Static_assert(sizeof(block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(block_q5_1) == 24, "Q5_1 block is 24 bytes");

/* The 5th bits of a 5-bit block's 32 values. */
static inline uint32_t q5_high_bits(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* Activations quantized for a matmul against quantized weights: QK8X int8 values q, a scale d,
 * and s = d * sum(q) (used by the offset term of Q4_1 and Q5_1). */
typedef struct {
    float d;
    float s;
    int8_t qs[QK8X];
} block_q8x;
_Static_assert(sizeof(block_q8x) == 40, "an activation block is 40 bytes");

/* The kernels of Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 pair each weight block with one activation block. */
_Static_assert(QK8_0 == QK8X && QK4_0 == QK8X && QK4_1 == QK8X && QK5_0 == QK8X && QK5_1 == QK8X,
               "Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 blocks hold as many values as an activation block");

static inline float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0 && mant == 0) {
        bits = sign;
    } else if (exp == 0) { /* subnormal: renormalize */
        exp = 113;
        while (!(mant & 0x400u)) { mant <<= 1; exp--; }
        bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#endif
