/* quants.h - the block layouts of the quantized types and the helpers every kernel file shares.
 *
 * Weight blocks are GGUF's, byte for byte; each type has its own block size (QK4_0, QK8_0, ...,
 * QK_K for the K-quants' super-blocks). Quantized weights multiply against activations quantized
 * to 8 bits: the 32-value types per block of QK8X values (block_q8x), the K-quants per QK_K
 * values (block_q8k). Which one a weight type reads is a column of dispatch.c's traits table.
 */
#ifndef PYLLM_QUANTS_H
#define PYLLM_QUANTS_H

#include <math.h>
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

/* The K-quants: super-blocks of QK_K values in sub-blocks with their own scales (and mins). */
#define QK_K 256

/* Q4_K: 8 sub-blocks of 32; value = d * scale[s] * q - dmin * min[s], q 0..15. The 6-bit scales and
 * mins are packed in 12 bytes (kquant_scales). qs holds 64 values per 32 bytes: byte l of the
 * j-th 32 holds value 64j + l in its low nibble and 64j + 32 + l in its high one. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} block_q4_K;
/* Q5_K: Q4_K with a fifth bit: bit s of qh[l] is the high bit of value 32s + l. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
/* Q6_K: 16 sub-blocks of 16; value = d * scales[i] * (q - 32), q 0..63. Per half of 128 values
 * (ql + 64h, qh + 32h): value 32k + l takes the low nibble of ql[l] (k = 0), of ql[32 + l] (k = 1),
 * the high nibble of ql[l] (k = 2), of ql[32 + l] (k = 3), and bits 2k, 2k+1 of qh[l] above it. */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;
_Static_assert(sizeof(block_q4_K) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(block_q5_K) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(block_q6_K) == 210, "Q6_K block is 210 bytes");

/* Activations for the K-quants: QK_K int8 values q with d = max|x| / 127 (as block_q8x), and
 * bsums[i] = the sum of q over values 16i .. 16i+15, which the min (Q4_K, Q5_K) and the -32
 * (Q6_K) terms need. */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8k;
_Static_assert(sizeof(block_q8k) == 292, "a K-quant activation block is 292 bytes");

/* The 8 six-bit scales and mins of a Q4_K/Q5_K super-block from its 12 packed bytes: bytes 0-3
 * hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; scales and mins 4-7 take their low 4 bits
 * from bytes 8-11 (low and high nibble) and their top 2 bits from the top of bytes 0-3 and 4-7. */
static inline void kquant_scales(const uint8_t *s, uint8_t *scale, uint8_t *min) {
    for (int j = 0; j < 4; j++) {
        scale[j] = s[j] & 63;
        min[j] = s[j + 4] & 63;
        scale[j + 4] = (uint8_t)((s[j + 8] & 0x0F) | ((s[j] >> 6) << 4));
        min[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* kquant_scales in two 64-bit words, byte j of each the scale or min of sub-block j (little-endian),
 * computed in registers: SIMD kernels load them into vectors without a round trip through memory. */
static inline void kquant_scales_packed(const uint8_t *s, uint64_t *scales, uint64_t *mins) {
    uint32_t a, b, c;
    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    const uint32_t low6 = 0x3F3F3F3Fu, low4 = 0x0F0F0F0Fu, top2 = 0x30303030u;
    *scales = (a & low6) | (uint64_t)((c & low4) | ((a >> 2) & top2)) << 32;
    *mins = (b & low6) | (uint64_t)(((c >> 4) & low4) | ((b >> 2) & top2)) << 32;
}

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

/* float -> IEEE half, rounding to nearest even (overflow to infinity, NaN kept a quiet NaN). */
static inline uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, abs = x & 0x7FFFFFFFu;
    if (abs >= 0x7F800000u) return (uint16_t)(sign | (abs > 0x7F800000u ? 0x7E00u : 0x7C00u));
    if (abs >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to 65536 or more */
    if (abs < 0x38800000u) { /* below 2^-14: a subnormal half, m * 2^-24 */
        float a;
        memcpy(&a, &abs, sizeof a);
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t h = ((abs >> 23) - 112) << 10 | (abs & 0x7FFFFFu) >> 13, rest = abs & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

#endif
