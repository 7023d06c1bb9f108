/* x86.c - the AVX2 and AVX-512 kernels (x86-64).
 *
 * Both families are compiled with per-function target attributes and chosen at run time
 * (dispatch.c), so one x86-64 build still runs on CPUs without AVX2; no -march flag is needed.
 * AVX-512 shares AVX2's helpers (exp, horizontal sums, activation quantization, softmax), which
 * every AVX-512 CPU runs.
 */
#include "arch.h"

#ifdef HAVE_X86_KERNELS
#include <immintrin.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA + F16C kernels.
 *
 * The quantized types but Q5_K go through lane kernels (avx2_matmul_lanes, avx2_matmul_k): 8
 * weight rows in the 8 lanes for batches, a row at a time for single tokens, in the float order of
 * the AVX-512 lane kernels, so that both x86 families give these matmuls the same bits. Float
 * weights and Q5_K are cut into tiles of R weight rows x C activation rows: each tile loads and
 * unpacks a weight block once for C activation rows and an activation block once for R weight
 * rows, keeps R*C accumulators in registers, and reduces them horizontally only at the end of the
 * row. Prompts use 3x4 tiles for float weights (12 of the 16 registers hold accumulators; against
 * 2x4, F16 pp512 +18%; 2x6 and 4x3 are slower), 2x4 for Q5_K. Decoding (one activation
 * row) reads weight rows one at a time, front to back: interleaving several rows in a tile, to
 * share each activation load between them, makes the weights arrive slower from memory than the
 * row at a time needs them (SmolLM2 tg128 at 2 threads: F16 +20%, Q4_0 +65%, Q8_0 +100% against
 * 4-row tiles). The tile functions are always inlined with constant type, R and C, so each
 * instantiation is a straight-line kernel.
 */
#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Decoding reads each weight row once, from memory: ask for the data this many bytes ahead of
 * the row being read, further than the hardware prefetcher runs on its own. Measured in pairs
 * (tools/ab_builds.py), 4 KiB against 2 KiB on Zen 5: AVX-512 decoding +2% on SmolLM2 Q4_1, Gemma 3
 * and 1B shapes (27-28 of 40 pairs faster each), AVX2 +0-1%; one thread streaming a Q4_K matrix
 * +9%. (Earlier, SmolLM2 tg128: AVX2 F16 and Q4_0 +2-4% at 2 KiB against 1 KiB.) */
#define PREFETCH_BYTES 4096

/* Weight rows per prompt tile of Q5_K (by 4 activation rows), AVX2 and AVX-512. */
#define KTILE_ROWS 2
#define KTILE_ROWS_AVX512 2
#define KTILE_COLS_AVX512 4 /* AVX-512 only: activation rows per prompt tile (1x8, 1x6, 2x5, 3x3, 4x2 no faster) */

/* Ask for the cache line `ahead` bytes past p. The address is formed as an integer: near the end
 * of the weights it lies outside them, where pointer arithmetic would be undefined (a prefetch
 * itself never faults). A macro, so that it is part of the target-specific kernel around it. */
#define PREFETCH_AHEAD(p, ahead) _mm_prefetch((const char *)((uintptr_t)(p) + (ahead)), _MM_HINT_T0)

AVX2_INLINE float avx2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 16 float lanes lo (0-7), hi (8-15) summed by the AVX-512 kernels' tree (avx512_sum16):
 * lanes i and i + 8, then those sums i and i + 4, then i and i + 2, then the last two. */
AVX2_INLINE float avx2_sum16(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(hi, lo);
    const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
    const __m128 s2 = _mm_add_ps(s4, _mm_shuffle_ps(s4, s4, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

AVX2_INLINE float avx2_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

AVX2_INLINE int avx2_hsum_i32(__m256i v) {
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    return _mm_cvtsi128_si32(s4);
}

/* 16 bytes of nibbles -> 32 bytes 0..15 in element order (low nibbles first, then high). */
AVX2_INLINE __m256i avx2_nibbles(const uint8_t *qs) {
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/* The 5th bits of a 5-bit block (qh: 32 bits, bit j for element j) -> 32 bytes in element order,
 * 0x10 where the bit is set, else 0: byte k takes byte k / 8 of qh and tests bit k % 8 of it. */
AVX2_INLINE __m256i avx2_fifth_bits(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, sizeof bits);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

/* Bytes of one block of a quantized type of 32-value blocks. */
static inline size_t x86_block_bytes(const int type) {
    switch (type) {
    case PYLLM_TYPE_Q8_0: return sizeof(block_q8_0);
    case PYLLM_TYPE_Q4_0: return sizeof(block_q4_0);
    case PYLLM_TYPE_Q4_1: return sizeof(block_q4_1);
    case PYLLM_TYPE_Q5_0: return sizeof(block_q5_0);
    default: return sizeof(block_q5_1);
    }
}

/* Types whose value is q * d + m: the offset m multiplies the activations' sum (block_q8x's s). */
static inline int x86_has_min(const int type) {
    return type == PYLLM_TYPE_Q4_1 || type == PYLLM_TYPE_Q5_1;
}

/* The lane kernels, AVX2: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 in the float order of the AVX-512 lane
 * kernels (below), so that a token gives the same bits alone or in a batch, and the same bits on
 * both x86 families. Per weight row and token, block b's exact integer dot I_b times the product
 * of the two blocks' scales (d_b xd_b, one rounding) is added by one fused multiply-add into one of
 * four float sums A_j, j = (b / 2) % 4, in block order from +0; Q4_1 and Q5_1 then add m_b s_b
 * (s_b: the activation block's d sum(x)) into the same sum by a second one. The result is
 * (A_0 + A_2) + (A_1 + A_3).
 *   vpmaddubsw multiplies unsigned by signed bytes: the 4- and 5-bit types multiply their unsigned
 * values u (Q4_0: q = u - 8, Q5_0: q = u - 16) and start the sum from -o sum(x); Q8_0 multiplies
 * |q| by x with q's sign. The int16 pair sums of 4-bit values stay exact over a whole block
 * (8 * 2 * 15 * 127 < 32768), of 5-bit ones over half a block; then one vpmaddwd per part.
 *   Batches of AVX2_LANES_MIN tokens and more (avx2_lanes_prompt) put 8 weight rows in the 8 lanes:
 * each 8 rows' blocks are unpacked once per matmul into 4-byte groups (lane r: row r's bytes
 * 4k .. 4k + 3 of block b), and each vpmaddubsw multiplies a group by 4 activation bytes broadcast
 * to every lane, so I_b comes out whole in each lane. The sums A_j are taken one after the other
 * (each over its own blocks, in order), so a token needs one accumulator at a time.
 *   Single tokens (avx2_lanes_group) read a row front to back, 8 blocks at a time: the 4- and 5-bit
 * types two blocks per register (values 0-15 of both, then 16-31, against the token laid out the
 * same way once per matmul), Q8_0 a block per register; a vphaddd tree gives the 8 blocks' I_b in
 * the order 0, 2, 4, 6, 1, 3, 5, 7, and two multiply-adds add them into the four sums, one per lane
 * of a 128-bit register. Against the 2x4 tiles' row this replaced, one thread in cache: Q5_0
 * 2048 x 640 112-115 -> 94-95 us (docs/performance.md). */

/* The offset o of a type's unsigned weights on AVX2 (above): Q4_0's 8, Q5_0's 16, else 0. */
static inline int avx2_lanes_offset(const int type) {
    return type == PYLLM_TYPE_Q4_0 ? 8 : type == PYLLM_TYPE_Q5_0 ? 16 : 0;
}

/* Block blk's 32 values as bytes in element order: u for the 4- and 5-bit types, Q8_0's signed q. */
AVX2_INLINE __m256i avx2_block_values(const int type, const uint8_t *blk) {
    switch (type) {
    case PYLLM_TYPE_Q8_0: return _mm256_loadu_si256((const __m256i *)(blk + 2));
    case PYLLM_TYPE_Q4_0: return avx2_nibbles(blk + 2);
    case PYLLM_TYPE_Q4_1: return avx2_nibbles(blk + 4);
    case PYLLM_TYPE_Q5_0: return _mm256_or_si256(avx2_nibbles(blk + 6), avx2_fifth_bits(blk + 2));
    default: return _mm256_or_si256(avx2_nibbles(blk + 8), avx2_fifth_bits(blk + 4));
    }
}

/* -o times the sum of each of `count` activation blocks (o: avx2_lanes_offset, or the AVX-512
 * lanes' own). */
AVX2_INLINE void avx2_lanes_offsets(const int o, const block_q8x *x, size_t count, int32_t *nx) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (size_t i = 0; i < count; i++) {
        const __m256i s16 = _mm256_maddubs_epi16(ones, _mm256_loadu_si256((const __m256i *)x[i].qs));
        nx[i] = -o * avx2_hsum_i32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    }
}

/* I_b (without the -o sum(x) term) of one lane's worth of groups: w[k] the 8 groups of 4 weight
 * bytes (Q8_0: |q|, and sg[k] q itself for the signs), xs the block's 32 activation bytes. */
AVX2_INLINE __m256i avx2_lanes_dot(const int type, const __m256i *w, const __m256i *sg, const int8_t *xs) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i dot = _mm256_setzero_si256();
    if (type == PYLLM_TYPE_Q8_0) {
        for (int k = 0; k < 8; k++) {
            int32_t x4;
            memcpy(&x4, xs + 4 * k, sizeof x4);
            const __m256i p = _mm256_maddubs_epi16(w[k], _mm256_sign_epi8(_mm256_set1_epi32(x4), sg[k]));
            dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, ones));
        }
        return dot;
    }
    const int per = type == PYLLM_TYPE_Q4_0 || type == PYLLM_TYPE_Q4_1 ? 8 : 4; /* groups summed in int16 */
    for (int k0 = 0; k0 < 8; k0 += per) {
        __m256i s16 = _mm256_setzero_si256();
        for (int k = k0; k < k0 + per; k++) {
            int32_t x4;
            memcpy(&x4, xs + 4 * k, sizeof x4);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(x4)));
        }
        dot = _mm256_add_epi32(dot, _mm256_madd_epi16(s16, ones));
    }
    return dot;
}

/* 8 rows x of 8 int32 -> row r's int32 k in out[k], lane r. */
AVX2_INLINE void avx2_transpose8x8(const __m256i *x, __m256i *out) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(x[2 * i], x[2 * i + 1]);     /* dwords 0, 1 | 4, 5 of rows 2i, 2i+1 */
        t[2 * i + 1] = _mm256_unpackhi_epi32(x[2 * i], x[2 * i + 1]); /* dwords 2, 3 | 6, 7 */
    }
    for (int h = 0; h < 2; h++) { /* rows 4h .. 4h + 3 */
        u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);     /* dword 0 | 4 */
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);     /* dword 1 | 5 */
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]); /* dword 2 | 6 */
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]); /* dword 3 | 7 */
    }
    for (int k = 0; k < 4; k++) {
        out[k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
        out[k + 4] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
    }
}

/* 8 rows from w (nr of them real, the others zero) unpacked for avx2_lanes_prompt: per block b,
 * wq[b * G + k] (G = 8, Q8_0 16) holds bytes 4k .. 4k + 3 of each row's avx2_block_values in lane
 * r (Q8_0: |q|, then q in wq[b * 16 + 8 + k]); wd[b * 8 + r] the block's scale d, wm[b * 8 + r] its
 * offset m (Q4_1, Q5_1). */
AVX2_INLINE void avx2_lanes_unpack8(const int type, const uint8_t *w, size_t rb, int nr, int nb, __m256i *wq,
                                    float *wd, float *wm) {
    const size_t bsize = x86_block_bytes(type);
    const int G = type == PYLLM_TYPE_Q8_0 ? 16 : 8;
    for (int b = 0; b < nb; b++) {
        __m256i v[8];
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * bsize;
            v[r] = r < nr ? avx2_block_values(type, blk) : _mm256_setzero_si256();
            wd[(size_t)b * 8 + r] = r < nr ? avx2_half(blk) : 0.0f;
            if (x86_has_min(type)) wm[(size_t)b * 8 + r] = r < nr ? avx2_half(blk + 2) : 0.0f;
        }
        __m256i *o = wq + (size_t)b * G;
        avx2_transpose8x8(v, o);
        if (type == PYLLM_TYPE_Q8_0)
            for (int k = 0; k < 8; k++) {
                o[8 + k] = o[k];
                o[k] = _mm256_abs_epi8(o[k]); /* -128 becomes 0x80: 128 as maddubs reads it */
            }
    }
}

/* C tokens (x, x + nb, ...) times 8 unpacked rows; nx[t * nb + b] = -o times the sum of token t's
 * block b (unused where o is 0). Writes (or adds to) y[t * y_stride + r] for the nr real rows. */
AVX2_INLINE void avx2_lanes_prompt(const int type, const int C, const __m256i *wq, const float *wd,
                                   const float *wm, int nr, const block_q8x *x, const int32_t *nx, int nb,
                                   float *y, int y_stride, int accumulate) {
    const int G = type == PYLLM_TYPE_Q8_0 ? 16 : 8;
    __m256 sum[4][4]; /* sum j of token c */
    for (int j = 0; j < 4; j++) {
        __m256 acc[4];
        for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps();
        for (int b0 = 2 * j; b0 < nb; b0 += 8)
            for (int b = b0; b < b0 + 2 && b < nb; b++) {
                const __m256i *wv = wq + (size_t)b * G;
                const __m256 wdv = _mm256_loadu_ps(wd + (size_t)b * 8);
                for (int c = 0; c < C; c++) {
                    const block_q8x *xb = x + (size_t)c * nb + b;
                    __m256i dot = avx2_lanes_dot(type, wv, wv + 8, xb->qs);
                    if (avx2_lanes_offset(type)) dot = _mm256_add_epi32(dot, _mm256_set1_epi32(nx[(size_t)c * nb + b]));
                    const __m256 s = _mm256_mul_ps(wdv, _mm256_set1_ps(xb->d));
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, acc[c]);
                    if (x86_has_min(type))
                        acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(wm + (size_t)b * 8), _mm256_set1_ps(xb->s), acc[c]);
                }
            }
        for (int c = 0; c < C; c++) sum[j][c] = acc[c];
    }
    for (int c = 0; c < C; c++) {
        __m256 v = _mm256_add_ps(_mm256_add_ps(sum[0][c], sum[2][c]), _mm256_add_ps(sum[1][c], sum[3][c]));
        float *dst = y + (size_t)c * y_stride;
        _Alignas(32) float out[8];
        _mm256_store_ps(out, v);
        for (int r = 0; r < nr; r++) dst[r] = accumulate ? dst[r] + out[r] : out[r];
    }
}

/* One token's activation scales d (xd), sums s (xs, Q4_1 and Q5_1) and -o sum(x) (nx) for
 * avx2_lanes_group: per group of 8 blocks in the order 0, 2, 4, 6, 1, 3, 5, 7, 0 past the last
 * block; and, for the 4- and 5-bit types, its values by pair of blocks (xp: 64 bytes per pair,
 * values 0-15 of block 2p, 0-15 of block 2p + 1, then 16-31 of each; zero for an absent block).
 * Groups g0 .. g1 - 1 (of 8 blocks each) into entries from 0. */
#define LANE8_BLOCK(i) ((i) < 4 ? 2 * (i) : 2 * ((i) - 4) + 1)
AVX2_INLINE void avx2_lanes_xorder(const int type, const block_q8x *x, int nb, int g0, int g1, float *xd,
                                   float *xs, int32_t *nx, int8_t *xp) {
    for (int g = g0; g < g1; g++) {
        for (int i = 0; i < 8; i++) {
            const int b = 8 * g + LANE8_BLOCK(i);
            const size_t at = (size_t)(g - g0) * 8 + i;
            xd[at] = b < nb ? x[b].d : 0.0f;
            if (x86_has_min(type)) xs[at] = b < nb ? x[b].s : 0.0f;
            if (avx2_lanes_offset(type)) {
                int32_t v = 0;
                if (b < nb) avx2_lanes_offsets(avx2_lanes_offset(type), x + b, 1, &v);
                nx[at] = v;
            }
        }
        if (type == PYLLM_TYPE_Q8_0) continue;
        for (int p = 0; p < 4; p++) {
            const int a = 8 * g + 2 * p;
            int8_t *dst = xp + ((size_t)(g - g0) * 4 + p) * 64;
            const __m128i z = _mm_setzero_si128();
            const __m128i a0 = a < nb ? _mm_loadu_si128((const __m128i *)x[a].qs) : z;
            const __m128i a1 = a < nb ? _mm_loadu_si128((const __m128i *)(x[a].qs + 16)) : z;
            const __m128i b0 = a + 1 < nb ? _mm_loadu_si128((const __m128i *)x[a + 1].qs) : z;
            const __m128i b1 = a + 1 < nb ? _mm_loadu_si128((const __m128i *)(x[a + 1].qs + 16)) : z;
            _mm256_storeu_si256((__m256i *)dst, _mm256_set_m128i(b0, a0));
            _mm256_storeu_si256((__m256i *)(dst + 32), _mm256_set_m128i(b1, a1));
        }
    }
}

/* Blocks a and b (NULL: absent, zeros) of a 4- or 5-bit type as their unsigned values: lo holds
 * values 0-15 of a, then 0-15 of b; hi values 16-31 of each. */
AVX2_INLINE void avx2_pair_values(const int type, const uint8_t *a, const uint8_t *b, __m256i *lo, __m256i *hi) {
    const size_t qs = type == PYLLM_TYPE_Q4_0 ? 2 : type == PYLLM_TYPE_Q4_1 ? 4 : type == PYLLM_TYPE_Q5_0 ? 6 : 8;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m128i qa = _mm_loadu_si128((const __m128i *)(a + qs));
    const __m256i q = b ? _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b + qs)), qa) : _mm256_castsi128_si256(qa);
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (b == NULL) {
        *lo = _mm256_permute2x128_si256(*lo, *lo, 0x80); /* the high lane zero */
        *hi = _mm256_permute2x128_si256(*hi, *hi, 0x80);
    }
    if (type == PYLLM_TYPE_Q5_0 || type == PYLLM_TYPE_Q5_1) {
        /* the 5th bits: value k of a block is bit k of its qh; byte j of a 128-bit lane takes
         * byte j / 8 of its block's qh and tests bit j % 8. With both blocks, one 32-byte load
         * from a's qh holds a's qh at bytes 0-3 and b's at bytes bsize - 16 .. bsize - 13 of the
         * high lane (no trip through an integer register); a row's lone last block reads its 4
         * bytes alone (a 32-byte load there could read past the tensor). */
        __m256i h, sel_lo;
        if (b) {
            const char o = (char)(type == PYLLM_TYPE_Q5_0 ? sizeof(block_q5_0) - 16 : sizeof(block_q5_1) - 16);
            h = _mm256_loadu_si256((const __m256i *)(a + qs - 4));
            sel_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                      o, o, o, o, o, o, o, o, o + 1, o + 1, o + 1, o + 1, o + 1, o + 1, o + 1, o + 1);
        } else {
            uint32_t ha;
            memcpy(&ha, a + qs - 4, 4);
            h = _mm256_set_m128i(_mm_setzero_si128(), _mm_set1_epi32((int)ha)); /* no b: a high lane of 0 */
            sel_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                      0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        }
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL), five = _mm256_set1_epi8(0x10);
        const __m256i sel_hi = _mm256_add_epi8(sel_lo, _mm256_set1_epi8(2));
        const __m256i blo = _mm256_and_si256(_mm256_shuffle_epi8(h, sel_lo), bit);
        const __m256i bhi = _mm256_and_si256(_mm256_shuffle_epi8(h, sel_hi), bit);
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_cmpeq_epi8(blo, bit), five));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_cmpeq_epi8(bhi, bit), five));
    }
}

/* The exact int32 partial sums of blocks a and b (NULL: absent) of a 4- or 5-bit type against
 * the token's values laid out by pair (xq: avx2_lanes_xorder's 64 bytes): four for a in the low
 * lane, four for b in the high one. */
AVX2_INLINE __m256i avx2_pair_sums(const int type, const uint8_t *a, const uint8_t *b, const int8_t *xq) {
    __m256i lo, hi;
    avx2_pair_values(type, a, b, &lo, &hi);
    const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xq)),
                                         _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 32))));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* The f16 words at offset `at` of blocks 8g + 0, 2, 4, 6, 1, 3, 5, 7 (0 for those at or past nb),
 * gathered in integer registers (small stores read back as one vector would stall). */
AVX2_INLINE __m128i avx2_group_halves(const uint8_t *row, size_t bsize, int g, int nb, const int full, size_t at) {
    uint64_t half[2] = {0, 0};
    for (int i = 0; i < 8; i++) {
        const int b = 8 * g + LANE8_BLOCK(i);
        if (!full && b >= nb) continue;
        uint16_t h;
        memcpy(&h, row + (size_t)b * bsize + at, 2);
        half[i / 4] |= (uint64_t)h << (16 * (i % 4));
    }
    return _mm_set_epi64x((long long)half[1], (long long)half[0]);
}

/* Blocks 8g .. 8g + 7 of a row (those below nb) against one token, added into the four sums; xp:
 * the group's 4 pairs of avx2_lanes_xorder (4- and 5-bit types). */
AVX2_INLINE __m128 avx2_lanes_group(const int type, const int full, const uint8_t *row, const block_q8x *x,
                                    const float *xd, const float *xs, const int32_t *nx, const int8_t *xp, int g,
                                    int nb, __m128 acc) {
    const size_t bsize = x86_block_bytes(type);
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t *blk0 = row + (size_t)8 * g * bsize;
    for (size_t o = 0; o < 8 * bsize; o += 64) PREFETCH_AHEAD(blk0 + o, PREFETCH_BYTES);
    __m256i isum; /* I_b of blocks 0, 2, 4, 6 in the low lane, 1, 3, 5, 7 in the high one */
    if (type == PYLLM_TYPE_Q8_0) {
        __m256i v[8];
        for (int i = 0; i < 8; i++) {
            const int b = 8 * g + LANE8_BLOCK(i);
            if (!full && b >= nb) { v[i] = _mm256_setzero_si256(); continue; }
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(row + (size_t)b * bsize + 2));
            const __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].qs);
            v[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv)), ones);
        }
        const __m256i e = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        const __m256i o = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
        isum = _mm256_set_m128i(_mm_add_epi32(_mm256_castsi256_si128(o), _mm256_extracti128_si256(o, 1)),
                                _mm_add_epi32(_mm256_castsi256_si128(e), _mm256_extracti128_si256(e, 1)));
    } else {
        __m256i r[4]; /* pair p: block 2p's partial sums in lanes 0-3, block 2p + 1's in 4-7 */
        for (int p = 0; p < 4; p++) {
            const int a = 8 * g + 2 * p;
            if (!full && a >= nb) { r[p] = _mm256_setzero_si256(); continue; }
            r[p] = avx2_pair_sums(type, row + (size_t)a * bsize,
                                  full || a + 1 < nb ? row + (size_t)(a + 1) * bsize : NULL, xp + 64 * p);
        }
        /* low lane: blocks 0, 2 | 4, 6 halves, then whole; high lane: 1, 3 | 5, 7 */
        isum = _mm256_hadd_epi32(_mm256_hadd_epi32(r[0], r[1]), _mm256_hadd_epi32(r[2], r[3]));
    }
    if (avx2_lanes_offset(type)) isum = _mm256_add_epi32(isum, _mm256_loadu_si256((const __m256i *)nx));
    const __m256 f = _mm256_cvtepi32_ps(isum);
    const __m256 s = _mm256_mul_ps(_mm256_cvtph_ps(avx2_group_halves(row, bsize, g, nb, full, 0)), _mm256_loadu_ps(xd));
    acc = _mm_fmadd_ps(_mm256_castps256_ps128(f), _mm256_castps256_ps128(s), acc);
    __m256 wm = _mm256_setzero_ps(), xsv = _mm256_setzero_ps();
    if (x86_has_min(type)) {
        wm = _mm256_cvtph_ps(avx2_group_halves(row, bsize, g, nb, full, 2));
        xsv = _mm256_loadu_ps(xs);
        acc = _mm_fmadd_ps(_mm256_castps256_ps128(wm), _mm256_castps256_ps128(xsv), acc);
    }
    acc = _mm_fmadd_ps(_mm256_extractf128_ps(f, 1), _mm256_extractf128_ps(s, 1), acc);
    if (x86_has_min(type)) acc = _mm_fmadd_ps(_mm256_extractf128_ps(wm, 1), _mm256_extractf128_ps(xsv, 1), acc);
    return acc;
}

/* The last two blocks of a row of 8g + 2 blocks (a = 8g; a 4- or 5-bit type) against one token:
 * avx2_lanes_group's arithmetic for them, both into the first sum, without the work of the six
 * absent blocks (their 0 * 0 added to the other sums, as there, by one addition). A row of 576
 * values (SmolLM2) ends this way. */
AVX2_INLINE __m128 avx2_lanes_last_pair(const int type, const uint8_t *row, const float *xd, const float *xs,
                                        const int32_t *nx, const int8_t *xp, int a, __m128 acc) {
    const size_t bsize = x86_block_bytes(type);
    const uint8_t *ba = row + (size_t)a * bsize, *bb = ba + bsize;
    const __m256i r = avx2_pair_sums(type, ba, bb, xp);
    __m128i t = _mm_hadd_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    t = _mm_hadd_epi32(t, t); /* I_a, I_a+1, I_a, I_a+1 */
    if (avx2_lanes_offset(type)) t = _mm_add_epi32(t, _mm_setr_epi32(nx[0], nx[4], 0, 0));
    const __m128 f = _mm_cvtepi32_ps(t);
    const __m128 others = _mm_add_ps(acc, _mm_setzero_ps());
    acc = _mm_fmadd_ss(f, _mm_set_ss(avx2_half(ba) * xd[0]), acc);
    if (x86_has_min(type)) acc = _mm_fmadd_ss(_mm_set_ss(avx2_half(ba + 2)), _mm_set_ss(xs[0]), acc);
    acc = _mm_fmadd_ss(_mm_movehdup_ps(f), _mm_set_ss(avx2_half(bb) * xd[4]), acc);
    if (x86_has_min(type)) acc = _mm_fmadd_ss(_mm_set_ss(avx2_half(bb + 2)), _mm_set_ss(xs[4]), acc);
    return _mm_blend_ps(others, acc, 1);
}

/* The four sums as the result: (A_0 + A_2) + (A_1 + A_3). */
AVX2_INLINE float avx2_sums4_result(__m128 acc) {
    const __m128 half = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

/* Batches of this many tokens and more go through avx2_lanes_prompt, fewer a row at a time. */
#define AVX2_LANES_MIN 2
/* Rows of up to this many blocks (32,768 values) have the token's scales and sums in avx2_lanes_xorder's
 * order made once per matmul; longer ones make them per row, a piece at a time. */
#define AVX2_XORDER_BLOCKS 1024

AVX2_INLINE void avx2_matmul_lanes(const int type, const pyllm_tensor *w, int r0, int r1, const block_q8x *xq,
                                   int n, float *y, int accumulate) {
    const int nb = w->cols / QK8X;
    const size_t rb = kern_row_bytes(type, w->cols);
    void *scratch = NULL;
    const int G = type == PYLLM_TYPE_Q8_0 ? 16 : 8;
    if (n >= AVX2_LANES_MIN) { /* wq (nb G 32 bytes), wd and wm (nb 32 each), nx (n nb 4) */
        const size_t bytes = (size_t)nb * ((size_t)G * 32 + 64) + (size_t)n * nb * 4;
        scratch = aligned_alloc(32, (bytes + 31) / 32 * 32);
    }
    if (scratch) {
        __m256i *wq = scratch;
        float *wd = (float *)(wq + (size_t)nb * G), *wm = wd + (size_t)nb * 8;
        int32_t *nx = (int32_t *)(wm + (size_t)nb * 8);
        if (avx2_lanes_offset(type)) avx2_lanes_offsets(avx2_lanes_offset(type), xq, (size_t)n * nb, nx);
        for (int r = r0; r < r1; r += 8) {
            const int nr = r1 - r < 8 ? r1 - r : 8;
            avx2_lanes_unpack8(type, (const uint8_t *)w->data + (size_t)r * rb, rb, nr, nb, wq, wd, wm);
            int t = 0;
            for (; t + 4 <= n; t += 4)
                avx2_lanes_prompt(type, 4, wq, wd, wm, nr, xq + (size_t)t * nb, nx + (size_t)t * nb, nb,
                                  y + (size_t)t * w->rows + r, w->rows, accumulate);
            const block_q8x *xt = xq + (size_t)t * nb;
            const int32_t *nt = nx + (size_t)t * nb;
            float *yt = y + (size_t)t * w->rows + r;
            switch (n - t) {
            case 3: avx2_lanes_prompt(type, 3, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate); break;
            case 2: avx2_lanes_prompt(type, 2, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate); break;
            case 1: avx2_lanes_prompt(type, 1, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate); break;
            default: break;
            }
        }
        free(scratch);
        return;
    }
    /* a token at a time (also where the scratch could not be had: the same result, slower) */
    const int ng = (nb + 7) / 8, gfull = nb / 8, last_pair = type != PYLLM_TYPE_Q8_0 && nb % 8 == 2;
    _Alignas(32) float xd[AVX2_XORDER_BLOCKS], xs[AVX2_XORDER_BLOCKS];
    _Alignas(32) int32_t nx[AVX2_XORDER_BLOCKS];
    _Alignas(32) int8_t xp[AVX2_XORDER_BLOCKS * 32];
    for (int t = 0; t < n; t++) {
        const block_q8x *xt = xq + (size_t)t * nb;
        float *yt = y + (size_t)t * w->rows;
        if (ng * 8 <= AVX2_XORDER_BLOCKS) {
            avx2_lanes_xorder(type, xt, nb, 0, ng, xd, xs, nx, xp);
            for (int r = r0; r < r1; r++) {
                const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;
                __m128 acc = _mm_setzero_ps();
                int g = 0;
                for (; g < gfull; g++)
                    acc = avx2_lanes_group(type, 1, row, xt, xd + 8 * g, xs + 8 * g, nx + 8 * g, xp + 256 * g, g, nb, acc);
                if (last_pair)
                    acc = avx2_lanes_last_pair(type, row, xd + 8 * g, xs + 8 * g, nx + 8 * g, xp + 256 * g, 8 * g, acc);
                else if (g < ng)
                    acc = avx2_lanes_group(type, 0, row, xt, xd + 8 * g, xs + 8 * g, nx + 8 * g, xp + 256 * g, g, nb, acc);
                const float v = avx2_sums4_result(acc);
                yt[r] = accumulate ? yt[r] + v : v;
            }
            continue;
        }
        for (int r = r0; r < r1; r++) { /* longer rows: the token's order made a group at a time */
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;
            __m128 acc = _mm_setzero_ps();
            for (int g = 0; g < ng; g++) {
                avx2_lanes_xorder(type, xt, nb, g, g + 1, xd, xs, nx, xp);
                acc = avx2_lanes_group(type, 0, row, xt, xd, xs, nx, xp, g, nb, acc);
            }
            const float v = avx2_sums4_result(acc);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

/* R x C tile over Q5_K weights against block_q8k activations (the one K-quant the AVX2 lanes do
 * not take): rows w, w + rb, ...; activation rows xk, xk + nb, ... Per super-block each cell sums,
 * in int32 lanes, the byte products of every sub-block times its scale (maddubs, then madd by the
 * scale), less min * sum of x (from the activations' sums of 16), and adds it to its float
 * accumulator times the two blocks' d. Every weight value is unsigned (0..31), as maddubs needs;
 * no product pair overflows int16 (31 * 127 * 2 < 32767). */
AVX2_INLINE void avx2_q5k_tile(const int R, const int C, const uint8_t *w, size_t rb, const block_q8k *xk, int nb,
                               float *y, int y_stride, int accumulate) {
    const size_t bsize = sizeof(block_q5_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc[2][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();

    for (int b = 0; b < nb; b++) {
        __m256i isum[2][4], mins16[2], qh[2]; /* mins16: min[s] in int16 lanes 2s, 2s+1 (as bsums) */
        float wd[2], wmin[2];
        uint64_t sc[2]; /* byte s the scale of sub-block s */
        for (int r = 0; r < R; r++) {
            const block_q5_K *q = (const block_q5_K *)(w + (size_t)r * rb + (size_t)b * bsize);
            if (C == 1) {
                PREFETCH_AHEAD(q, PREFETCH_BYTES);
                PREFETCH_AHEAD((const uint8_t *)q + 64, PREFETCH_BYTES);
                PREFETCH_AHEAD((const uint8_t *)q + 128, PREFETCH_BYTES);
            }
            for (int c = 0; c < C; c++) isum[r][c] = _mm256_setzero_si256();
            uint64_t mn;
            wd[r] = _cvtsh_ss(q->d);
            wmin[r] = _cvtsh_ss(q->dmin);
            kquant_scales_packed(q->scales, &sc[r], &mn);
            const __m128i m8 = _mm_cvtsi64_si128((long long)mn);
            mins16[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
            qh[r] = _mm256_loadu_si256((const __m256i *)q->qh);
        }
        for (int j = 0; j < 4; j++) {
            __m256i lo[2], hi[2], slo[2], shi[2];
            for (int r = 0; r < R; r++) {
                const block_q5_K *q = (const block_q5_K *)(w + (size_t)r * rb + (size_t)b * bsize);
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(q->qs + 32 * j));
                /* bit 2j of qh[l] over value 64j + l, bit 2j+1 over 64j + 32 + l */
                lo[r] = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_slli_epi16(_mm256_and_si256(qh[r], one), 4));
                hi[r] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh[r], 1), one), 4));
                qh[r] = _mm256_srli_epi16(qh[r], 2);
                slo[r] = _mm256_set1_epi16((short)(sc[r] >> (16 * j) & 0xFF));
                shi[r] = _mm256_set1_epi16((short)(sc[r] >> (16 * j + 8) & 0xFF));
            }
            for (int c = 0; c < C; c++) {
                const int8_t *xs = xk[(size_t)c * nb + b].qs + 64 * j;
                const __m256i x0 = _mm256_loadu_si256((const __m256i *)xs);
                const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xs + 32));
                for (int r = 0; r < R; r++) {
                    __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], x0), slo[r]),
                                                 _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], x1), shi[r]));
                    isum[r][c] = _mm256_add_epi32(isum[r][c], p);
                }
            }
        }
        for (int c = 0; c < C; c++) {
            const block_q8k *xb = xk + (size_t)c * nb + b;
            const __m256i bsums = _mm256_loadu_si256((const __m256i *)xb->bsums);
            for (int r = 0; r < R; r++) {
                const __m256i m = _mm256_madd_epi16(mins16[r], bsums);
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(wd[r] * xb->d), _mm256_cvtepi32_ps(isum[r][c]), acc[r][c]);
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(-wmin[r] * xb->d), _mm256_cvtepi32_ps(m), acc[r][c]);
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) {
            float v = avx2_hsum(acc[r][c]);
            float *dst = y + (size_t)c * y_stride + r;
            *dst = accumulate ? *dst + v : v;
        }
}

/* Q4_K and Q6_K, AVX2, in the float order of the AVX-512 K-quant kernels (below): per super-block
 * b, two exact integers T_b (the sub-blocks' scale * (q . x), q unsigned: Q4_K 0..15, Q6_K 0..63)
 * and M_b (Q4_K: min * sum(x) per sub-block; Q6_K: scale * sum(x)), then, into one of four float
 * sums A_j, j = b % 4, from +0 in block order, A_j = fma(d_b xd_b, T_b, A_j) and
 * A_j = fma(m_b xd_b, M_b, A_j) with m_b = -dmin_b (Q4_K) or -32 d_b (Q6_K); the result is
 * (A_0 + A_2) + (A_1 + A_3).
 *   Batches (avx2_klanes) put 8 weight rows in the 8 lanes: each super-block of the 8 rows is
 * unpacked once per matmul into 64 registers of 4-byte groups (lane r: row r's values
 * 4G .. 4G + 3), each vpmaddubsw multiplies one by 4 activation bytes broadcast to every lane, a
 * sub-block's products are summed in int16 (8 groups of Q4_K stay under 32768: 8 * 2 * 15 * 127;
 * 2 of Q6_K: 2 * 2 * 63 * 127), and one vpmaddwd by the pair (scale, scale) adds them to T.
 *   Single tokens (avx2_k_row) read a row front to back, each super-block's T and M in 8 int32
 * lanes, and four blocks' lanes folded together by a vphaddd tree for two multiply-adds. */

/* Super-block blk's 256 values as bytes in element order, 32 per register: Q4_K's nibbles, Q6_K's
 * 6-bit values. */
AVX2_INLINE void avx2_k_values(const int type, const uint8_t *blk, __m256i *v) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    if (type == PYLLM_TYPE_Q6_K) {
        const block_q6_K *q = (const block_q6_K *)blk;
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(q->qh + 32 * h));
            for (int k = 0; k < 4; k++) {
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(q->ql + 64 * h + 32 * (k & 1)));
                const __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
                /* bits 2k, 2k+1 of qh to bits 4, 5 (16-bit shifts: the mask drops what crosses bytes) */
                const __m256i hi = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2)
                                 : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
                v[4 * h + k] = _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
            }
        }
        return;
    }
    const block_q4_K *q = (const block_q4_K *)blk;
    for (int j = 0; j < 4; j++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(q->qs + 32 * j));
        v[2 * j] = _mm256_and_si256(raw, m4);
        v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
    }
}

/* One super-block of 8 Q4_K or Q6_K rows as avx2_klanes reads it: wq[G], lane r: row r's values
 * 4G .. 4G + 3; scale2[s], lane r: row r's scale of sub-block s twice (int16 pair); pair2[p], lane
 * r: the int16 pair that multiplies bsums 2p and 2p + 1 for M (Q4_K: min p twice; Q6_K: scales 2p
 * and 2p + 1); d and m as floats. */
typedef struct {
    __m256i wq[64], scale2[16], pair2[8];
    __m256 d, m;
} klanes8;

/* Two int16 in one int32 lane: lo in the low half. */
static inline int32_t lane_pair16(int lo, int hi) {
    return (int32_t)((uint32_t)(uint16_t)lo | (uint32_t)(uint16_t)hi << 16);
}

/* A Q4_K or Q6_K super-block (blk; NULL for an absent row: all zero) as the K-quant lane kernels of
 * both families keep it besides its values, into lane r of L: scale[s * L + r] the scale of
 * sub-block s (Q4_K 8 of them, Q6_K 16; the rest 0), pair2[p * L + r] the int16 pair that
 * multiplies bsums 2p and 2p + 1 for M (Q4_K: min p twice; Q6_K: scales 2p and 2p + 1), d[r], and
 * m[r] (-dmin, or -32 d). */
static inline void kquant_lane_scales(const int type, const uint8_t *blk, int r, int L, int32_t *scale,
                                      int32_t *pair2, float *d, float *m) {
    for (int s = 0; s < 16; s++) scale[s * L + r] = 0;
    for (int p = 0; p < 8; p++) pair2[p * L + r] = 0;
    d[r] = m[r] = 0.0f;
    if (!blk) return;
    if (type == PYLLM_TYPE_Q6_K) {
        const block_q6_K *q = (const block_q6_K *)blk;
        for (int s = 0; s < 16; s++) scale[s * L + r] = q->scales[s];
        for (int p = 0; p < 8; p++) pair2[p * L + r] = lane_pair16(q->scales[2 * p], q->scales[2 * p + 1]);
        d[r] = fp16_to_fp32(q->d);
        m[r] = d[r] * -32.0f;
    } else {
        const block_q4_K *q = (const block_q4_K *)blk;
        uint8_t sc[8], mn[8];
        kquant_scales(q->scales, sc, mn);
        for (int s = 0; s < 8; s++) {
            scale[s * L + r] = sc[s];
            pair2[s * L + r] = lane_pair16(mn[s], mn[s]);
        }
        d[r] = fp16_to_fp32(q->d);
        m[r] = -fp16_to_fp32(q->dmin);
    }
}

/* Rows from w (nr <= 8 of them; the other lanes zero), super-block by super-block (u[b]). */
AVX2_INLINE void avx2_klanes_unpack8(const int type, const uint8_t *w, size_t rb, int nr, int nb, klanes8 *u) {
    const size_t bsize = rb / (size_t)nb;
    for (int b = 0; b < nb; b++) {
        _Alignas(32) uint8_t vals[8][QK_K];
        _Alignas(32) int32_t scale[16][8], pair2[8][8];
        _Alignas(32) float d[8], m[8];
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = r < nr ? w + (size_t)r * rb + (size_t)b * bsize : NULL;
            kquant_lane_scales(type, blk, r, 8, scale[0], pair2[0], d, m);
            if (!blk) {
                memset(vals[r], 0, QK_K);
                continue;
            }
            __m256i v[8];
            avx2_k_values(type, blk, v);
            for (int j = 0; j < 8; j++) _mm256_store_si256((__m256i *)(vals[r] + 32 * j), v[j]);
        }
        klanes8 *o = u + b;
        for (int c = 0; c < QK_K / 32; c++) { /* 32 bytes (8 groups) of every row at a time */
            __m256i z[8];
            for (int r = 0; r < 8; r++) z[r] = _mm256_load_si256((const __m256i *)(vals[r] + 32 * c));
            avx2_transpose8x8(z, o->wq + 8 * c);
        }
        for (int s = 0; s < 16; s++) { /* each scale as the int16 pair (scale, scale) */
            const __m256i v = _mm256_load_si256((const __m256i *)scale[s]);
            o->scale2[s] = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v, 16));
        }
        for (int p = 0; p < 8; p++) o->pair2[p] = _mm256_load_si256((const __m256i *)pair2[p]);
        o->d = _mm256_load_ps(d);
        o->m = _mm256_load_ps(m);
    }
}

/* C tokens (xk: the first one's blocks, nb per token) times the 8 rows unpacked in u, into
 * y[t * y_stride + r] for the first nr rows. The sums A_j are taken one after the other. */
AVX2_INLINE void avx2_klanes(const int type, const int C, const klanes8 *u, int nb, const block_q8k *xk, int nr,
                             float *y, int y_stride, int accumulate) {
    const int S = type == PYLLM_TYPE_Q6_K ? 16 : 8, G = 64 / S; /* sub-blocks, 4-value groups in each */
    const int per = type == PYLLM_TYPE_Q6_K ? 2 : 8;           /* groups summed in int16 */
    __m256 sum[4][4];
    for (int j = 0; j < 4; j++) {
        __m256 acc[4];
        for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps();
        for (int b = j; b < nb; b += 4) {
            const klanes8 *o = u + b;
            for (int c = 0; c < C; c++) {
                const block_q8k *xb = xk + (size_t)c * nb + b;
                __m256i T = _mm256_setzero_si256(), M = _mm256_setzero_si256();
                for (int s = 0; s < S; s++)
                    for (int g0 = 0; g0 < G; g0 += per) {
                        __m256i s16 = _mm256_setzero_si256();
                        for (int g = g0; g < g0 + per; g++) {
                            int32_t x4;
                            memcpy(&x4, xb->qs + 4 * (s * G + g), sizeof x4);
                            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(o->wq[s * G + g], _mm256_set1_epi32(x4)));
                        }
                        T = _mm256_add_epi32(T, _mm256_madd_epi16(s16, o->scale2[s]));
                    }
                for (int p = 0; p < 8; p++) {
                    int32_t pair;
                    memcpy(&pair, xb->bsums + 2 * p, sizeof pair);
                    M = _mm256_add_epi32(M, _mm256_madd_epi16(o->pair2[p], _mm256_set1_epi32(pair)));
                }
                const __m256 xd = _mm256_set1_ps(xb->d);
                acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(o->d, xd), _mm256_cvtepi32_ps(T), acc[c]);
                acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(o->m, xd), _mm256_cvtepi32_ps(M), acc[c]);
            }
        }
        for (int c = 0; c < C; c++) sum[j][c] = acc[c];
    }
    for (int c = 0; c < C; c++) {
        __m256 v = _mm256_add_ps(_mm256_add_ps(sum[0][c], sum[2][c]), _mm256_add_ps(sum[1][c], sum[3][c]));
        float *dst = y + (size_t)c * y_stride;
        _Alignas(32) float out[8];
        _mm256_store_ps(out, v);
        for (int r = 0; r < nr; r++) dst[r] = accumulate ? dst[r] + out[r] : out[r];
    }
}

/* A batch through the lanes; 0 where their memory could not be had (nothing written then). */
AVX2_INLINE int avx2_matmul_klanes(const int type, const pyllm_tensor *w, int r0, int r1, const block_q8k *xk,
                                   int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    const int nb = w->cols / QK_K;
    klanes8 *u = aligned_alloc(32, (size_t)nb * sizeof(klanes8));
    if (!u) return 0;
    for (int c0 = r0; c0 < r1; c0 += 8) {
        const int nr = r1 - c0 < 8 ? r1 - c0 : 8;
        avx2_klanes_unpack8(type, (const uint8_t *)w->data + (size_t)c0 * rb, rb, nr, nb, u);
        int t = 0;
        float *yc = y + c0;
        for (; t + 4 <= n; t += 4) avx2_klanes(type, 4, u, nb, xk + (size_t)t * nb, nr, yc + (size_t)t * w->rows, w->rows, accumulate);
        switch (n - t) {
        case 3: avx2_klanes(type, 3, u, nb, xk + (size_t)t * nb, nr, yc + (size_t)t * w->rows, w->rows, accumulate); break;
        case 2: avx2_klanes(type, 2, u, nb, xk + (size_t)t * nb, nr, yc + (size_t)t * w->rows, w->rows, accumulate); break;
        case 1: avx2_klanes(type, 1, u, nb, xk + (size_t)t * nb, nr, yc + (size_t)t * w->rows, w->rows, accumulate); break;
        default: break;
        }
    }
    free(u);
    return 1;
}

/* Super-block blk of a Q4_K or Q6_K row against one token: 8 int32 lanes whose sum is T_b (*t),
 * 8 whose sum is M_b (*m); its d and m (-dmin, -32 d) as floats. */
AVX2_INLINE void avx2_k_block(const int type, const uint8_t *blk, const block_q8k *xb, __m256i *t, __m256i *m,
                              float *d, float *mf) {
    PREFETCH_AHEAD(blk, PREFETCH_BYTES);
    PREFETCH_AHEAD(blk + 64, PREFETCH_BYTES);
    PREFETCH_AHEAD(blk + 128, PREFETCH_BYTES); /* the next block's first line is blk + 192's at most */
    __m256i v[8], mins16, isum = _mm256_setzero_si256();
    avx2_k_values(type, blk, v);
    if (type == PYLLM_TYPE_Q6_K) {
        const block_q6_K *q = (const block_q6_K *)blk;
        const __m128i sc = _mm_loadu_si128((const __m128i *)q->scales);
        mins16 = _mm256_cvtepi8_epi16(sc);
        /* the even scales in the low lane, the odd ones in the high lane, as int16 */
        const __m256i eo = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)));
        for (int j = 0; j < 8; j++) { /* values 32j .. 32j + 31: sub-blocks 2j (low lane), 2j + 1 */
            const __m256i scale = _mm256_shuffle_epi8(eo, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
            const __m256i p = _mm256_maddubs_epi16(v[j], _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * j)));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale));
        }
        *d = _cvtsh_ss(q->d);
        *mf = *d * -32.0f;
    } else {
        const block_q4_K *q = (const block_q4_K *)blk;
        uint64_t sc, mn;
        kquant_scales_packed(q->scales, &sc, &mn);
        const __m128i m8 = _mm_cvtsi64_si128((long long)mn), s8 = _mm_cvtsi64_si128((long long)sc);
        mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(s8, s8)); /* both lanes: the 8 scales */
        for (int s = 0; s < 8; s++) {
            const __m256i p = _mm256_maddubs_epi16(v[s], _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * s)));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * s)))));
        }
        *d = _cvtsh_ss(q->d);
        *mf = -_cvtsh_ss(q->dmin);
    }
    *t = isum;
    *m = _mm256_madd_epi16(mins16, _mm256_loadu_si256((const __m256i *)xb->bsums));
}

/* Super-blocks g .. g + 3 of a Q4_K or Q6_K row (those below nb) against one token, added into the four sums. */
AVX2_INLINE __m128 avx2_k_group(const int type, const int full, const uint8_t *row, const block_q8k *xk, int g, int nb,
                                __m128 acc) {
    const size_t bsize = type == PYLLM_TYPE_Q6_K ? sizeof(block_q6_K) : sizeof(block_q4_K);
    __m256i t[4], m[4];
    float d[4], mf[4], xd[4];
    for (int k = 0; k < 4; k++) {
        if (!full && g + k >= nb) { t[k] = m[k] = _mm256_setzero_si256(); d[k] = mf[k] = xd[k] = 0.0f; continue; }
        avx2_k_block(type, row + (size_t)(g + k) * bsize, xk + g + k, &t[k], &m[k], &d[k], &mf[k]);
        xd[k] = xk[g + k].d;
    }
    /* T of the four blocks in the low lane, M in the high one, by one tree */
    const __m256i ht = _mm256_hadd_epi32(_mm256_hadd_epi32(t[0], t[1]), _mm256_hadd_epi32(t[2], t[3]));
    const __m256i hm = _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
    const __m256 tm = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_permute2x128_si256(ht, hm, 0x20),
                                                          _mm256_permute2x128_si256(ht, hm, 0x31)));
    const __m128 x4 = _mm_setr_ps(xd[0], xd[1], xd[2], xd[3]);
    const __m256 dm = _mm256_mul_ps(_mm256_setr_ps(d[0], d[1], d[2], d[3], mf[0], mf[1], mf[2], mf[3]),
                                    _mm256_set_m128(x4, x4));
    acc = _mm_fmadd_ps(_mm256_castps256_ps128(dm), _mm256_castps256_ps128(tm), acc);
    return _mm_fmadd_ps(_mm256_extractf128_ps(dm, 1), _mm256_extractf128_ps(tm, 1), acc);
}

/* One Q4_K or Q6_K row times one token, four super-blocks at a time. */
AVX2_INLINE float avx2_k_row(const int type, const uint8_t *row, const block_q8k *xk, int nb) {
    __m128 acc = _mm_setzero_ps();
    int g = 0;
    for (; g + 4 <= nb; g += 4) acc = avx2_k_group(type, 1, row, xk, g, nb, acc);
    if (g < nb) acc = avx2_k_group(type, 0, row, xk, g, nb, acc);
    return avx2_sums4_result(acc);
}

/* Batches of this many tokens and more take the 8-row lanes; fewer, the row at a time. */
#define AVX2_KLANES_MIN 4

AVX2_INLINE void avx2_matmul_k(const int type, const pyllm_tensor *w, int r0, int r1, const block_q8k *xk, int n,
                               float *y, int accumulate) {
    if (n >= AVX2_KLANES_MIN && avx2_matmul_klanes(type, w, r0, r1, xk, n, y, accumulate)) return;
    /* a token at a time (also where the lanes' memory could not be had: the same result) */
    const size_t rb = kern_row_bytes(type, w->cols);
    const int nb = w->cols / QK_K;
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const float v = avx2_k_row(type, (const uint8_t *)w->data + (size_t)r * rb, xk + (size_t)t * nb, nb);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

/* R x C tile over F32 or F16 weights against float activations. */
AVX2_INLINE void avx2_ftile(const int type, const int R, const int C, const uint8_t *w, size_t rb,
                            const float *x, int cols, float *y, int y_stride, int accumulate) {
    __m256 acc[3][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        __m256 wv[3];
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + (size_t)r * rb;
            if (C == 1 && i % (type == PYLLM_TYPE_F32 ? 16 : 32) == 0) /* once per 64-byte line */
                PREFETCH_AHEAD(row + i * (type == PYLLM_TYPE_F32 ? 4 : 2), PREFETCH_BYTES);
            wv[r] = type == PYLLM_TYPE_F32
                ? _mm256_loadu_ps((const float *)row + i)
                : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
        }
        for (int c = 0; c < C; c++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)c * cols + i);
            for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + (size_t)r * rb;
            float v = avx2_hsum(acc[r][c]);
            for (int j = i; j < cols; j++) {
                float wj = type == PYLLM_TYPE_F32 ? ((const float *)row)[j]
                                                  : _cvtsh_ss(((const uint16_t *)row)[j]);
                v += wj * x[(size_t)c * cols + j];
            }
            float *dst = y + (size_t)c * y_stride + r;
            *dst = accumulate ? *dst + v : v;
        }
}

AVX2_INLINE void avx2_tile(const int type, const int R, const int C, const pyllm_tensor *w,
                           size_t rb, int r, const float *x, const void *xq, int t, float *y,
                           int accumulate) {
    const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * rb;
    float *yt = y + (size_t)t * w->rows + r;
    if (type == PYLLM_TYPE_Q5_K) {
        int nb = w->cols / QK_K;
        avx2_q5k_tile(R, C, wr, rb, (const block_q8k *)xq + (size_t)t * nb, nb, yt, w->rows, accumulate);
    } else {
        avx2_ftile(type, R, C, wr, rb, x + (size_t)t * w->cols, w->cols, yt, w->rows, accumulate);
    }
}

/* Rows [r0, r1) for all n activation rows, in tiles; rows are walked in chunks that stay in
 * cache while every activation row passes over them. */
AVX2_INLINE void avx2_matmul_type(const int type, const pyllm_tensor *w, int r0, int r1,
                                  const float *x, const void *xq, int n, float *y,
                                  int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    if (n == 1) {
        for (int r = r0; r < r1; r++) avx2_tile(type, 1, 1, w, rb, r, x, xq, 0, y, accumulate);
        return;
    }
    const int TR = type == PYLLM_TYPE_Q5_K ? KTILE_ROWS : 3, TC = 4; /* tile: weight rows x activation rows */
    const int chunk = 64 / TR * TR;
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        int t = 0;
        for (; t + TC <= n; t += TC) {
            int r = c0;
            for (; r + TR <= c1; r += TR) avx2_tile(type, TR, TC, w, rb, r, x, xq, t, y, accumulate);
            for (; r < c1; r++) avx2_tile(type, 1, TC, w, rb, r, x, xq, t, y, accumulate);
        }
        for (; t < n; t++)
            for (int r = c0; r < c1; r++) avx2_tile(type, 1, 1, w, rb, r, x, xq, t, y, accumulate);
    }
}

/* The AVX2 matmul of each weight type (the traits table in dispatch.c points at them). */
AVX2_TARGET void kern_x86_matmul_f32_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                          const void *xq, int n, float *y, int accumulate) {
    avx2_matmul_type(PYLLM_TYPE_F32, w, r0, r1, x, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_f16_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                          const void *xq, int n, float *y, int accumulate) {
    avx2_matmul_type(PYLLM_TYPE_F16, w, r0, r1, x, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q8_0_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_lanes(PYLLM_TYPE_Q8_0, w, r0, r1, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q4_0_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_lanes(PYLLM_TYPE_Q4_0, w, r0, r1, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q4_1_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_lanes(PYLLM_TYPE_Q4_1, w, r0, r1, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q5_0_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_lanes(PYLLM_TYPE_Q5_0, w, r0, r1, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q5_1_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_lanes(PYLLM_TYPE_Q5_1, w, r0, r1, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q4_k_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_k(PYLLM_TYPE_Q4_K, w, r0, r1, (const block_q8k *)xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q5_k_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    avx2_matmul_type(PYLLM_TYPE_Q5_K, w, r0, r1, x, xq, n, y, accumulate);
}

AVX2_TARGET void kern_x86_matmul_q6_k_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                           const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx2_matmul_k(PYLLM_TYPE_Q6_K, w, r0, r1, (const block_q8k *)xq, n, y, accumulate);
}

/* Q8_0 weights against float activations (kern_matmul_float, the classifier) for rows longer than
 * AVX2_Q16_COLS (shorter ones: avx2_q8w16_row, below): one weight row by C activation rows, in the
 * AVX-512 kernel's order (avx512_q8f_tile), its 16 float lanes as two registers (lo: lanes 0-7, hi:
 * 8-15): per block and lane i, t = fma(q_16+i, x_16+i, q_i x_i), then acc_i = fma(d, t, acc_i);
 * the lanes summed at the end by avx2_sum16. Only the one FMA that adds a block to its row's
 * accumulator is a chain from block to block. Every tile shape does the same operations per row
 * and activation row, so a logit does not depend on how many rows a pass has. */
AVX2_INLINE void avx2_q8f_tile(const int C, const uint8_t *w, const float *x, int cols, float *y,
                               int y_stride, int accumulate) {
    __m256 lo[4], hi[4];
    for (int c = 0; c < C; c++) lo[c] = hi[c] = _mm256_setzero_ps();
    for (int b = 0; b < cols / QK8_0; b++) {
        const uint8_t *blk = w + (size_t)b * sizeof(block_q8_0);
        if (C == 1) PREFETCH_AHEAD(blk, PREFETCH_BYTES);
        const __m256 d = _mm256_set1_ps(avx2_half(blk));
        __m256 q[4]; /* values 8k .. 8k + 7 */
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * k))));
        for (int c = 0; c < C; c++) {
            const float *xb = x + (size_t)c * cols + (size_t)b * QK8_0;
            const __m256 tlo = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xb + 16), _mm256_mul_ps(q[0], _mm256_loadu_ps(xb)));
            const __m256 thi = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xb + 24), _mm256_mul_ps(q[1], _mm256_loadu_ps(xb + 8)));
            lo[c] = _mm256_fmadd_ps(d, tlo, lo[c]);
            hi[c] = _mm256_fmadd_ps(d, thi, hi[c]);
        }
    }
    for (int c = 0; c < C; c++) {
        float v = avx2_sum16(lo[c], hi[c]);
        float *dst = y + (size_t)c * y_stride;
        *dst = accumulate ? *dst + v : v;
    }
}

/* The classifier on AVX2 (Q8_0 weights against the final hidden states): each token's activations
 * rounded to 16 bits per block of 32 (scale max|x| / 32767: a relative error 256 times smaller than
 * the 8-bit activations of the other matmuls), so that a block is two vpmaddwd of the weights
 * widened to int16 against them: half the instructions of multiplying floats, where the int8 to
 * float conversions made the float kernel compute-bound (Gemma 3's 262,144 x 640 classifier, one
 * token, 2 threads, on a CPU without AVX-512: 10.6 ms against a 6.4 ms memory floor). Rows of up
 * to AVX2_Q16_COLS values; longer ones multiply floats (avx2_q8f_tile). */
#define AVX2_Q16_COLS 8192

/* A token's activations per block of 32: int16 values q (element order) and scale d, q d ~ x. */
AVX2_INLINE void avx2_quantize16(const float *x, int cols, int16_t *q, float *d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < cols / 32; b++) {
        const float *xb = x + 32 * b;
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float db = _mm_cvtss_f32(m) / 32767.0f, id = db > 0.0f ? 1.0f / db : 0.0f;
        __m256i qi[4];
        for (int i = 0; i < 4; i++) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
        /* packs interleaves the 128-bit lanes: 64-bit groups 0, 2, 1, 3 back to element order */
        _mm256_storeu_si256((__m256i *)(q + 32 * b), _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[0], qi[1]), 0xD8));
        _mm256_storeu_si256((__m256i *)(q + 32 * b + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[2], qi[3]), 0xD8));
        d[b] = db;
    }
}

/* One Q8_0 row against one token's 16-bit activations: per block the exact integer q16 . w in 8
 * lanes, times d_w d_x added to 8 float sums, summed at the end by avx2_hsum. */
AVX2_INLINE float avx2_q8w16_row(const uint8_t *row, const int16_t *xq, const float *xd, int nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * sizeof(block_q8_0);
        PREFETCH_AHEAD(blk, PREFETCH_BYTES);
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
        const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)(xq + 32 * b))),
                                           _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xq + 32 * b + 16))));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(avx2_half(blk) * xd[b]), _mm256_cvtepi32_ps(s), acc);
    }
    return avx2_hsum(acc);
}

/* One row at a time, front to back, for decoding; a row against 4 activation rows at a time for
 * prompts, rows in chunks that stay in cache meanwhile. */
AVX2_TARGET void kern_x86_matmul_float_q8_0_avx2(const pyllm_tensor *w, int r0, int r1, const float *x,
                                                 const void *xq, int n, float *y, int accumulate) {
    (void)xq;
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q8_0, w->cols);
    const uint8_t *data = w->data;
    const int chunk = n == 1 ? r1 - r0 : 64;
    if (w->cols <= AVX2_Q16_COLS) {
        /* each token's 16-bit activations made again for each chunk of rows (a few percent of the chunk's work) */
        _Alignas(32) int16_t q16[AVX2_Q16_COLS];
        float d16[AVX2_Q16_COLS / 32];
        const int nb = w->cols / QK8_0;
        for (int c0 = r0; c0 < r1; c0 += chunk) {
            const int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
            for (int t = 0; t < n; t++) {
                avx2_quantize16(x + (size_t)t * w->cols, w->cols, q16, d16);
                float *yt = y + (size_t)t * w->rows;
                for (int r = c0; r < c1; r++) {
                    const float v = avx2_q8w16_row(data + (size_t)r * rb, q16, d16, nb);
                    yt[r] = accumulate ? yt[r] + v : v;
                }
            }
        }
        return;
    }
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1, t = 0;
        for (; t + 4 <= n; t += 4)
            for (int r = c0; r < c1; r++)
                avx2_q8f_tile(4, data + (size_t)r * rb, x + (size_t)t * w->cols, w->cols,
                              y + (size_t)t * w->rows + r, w->rows, accumulate);
        for (; t < n; t++)
            for (int r = c0; r < c1; r++)
                avx2_q8f_tile(1, data + (size_t)r * rb, x + (size_t)t * w->cols, w->cols,
                              y + (size_t)t * w->rows + r, w->rows, accumulate);
    }
}

/* n halves as floats (exactly: every half is a float), 8 at a time. */
AVX2_TARGET void kern_x86_dequantize_row_f16_avx2(const void *src, float *dst, int n) {
    const uint16_t *h = src;
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(h[i]);
}

/* 8 bytes 0..63 at q as floats ds * q - dm: multiply, then subtract, each rounded as the reference does. */
AVX2_INLINE void avx2_dequantize8(const uint8_t *q, __m256 ds, __m256 dm, float *dst) {
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q)));
    _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(ds, v), dm));
}

/* Rows of Q4_K and Q5_K: the 5-bit values of one sub-block unpacked to bytes, then converted. */
AVX2_INLINE void avx2_dequantize_row_q45_k(const int type, const void *src, float *dst, int n) {
    const size_t bsize = type == PYLLM_TYPE_Q4_K ? sizeof(block_q4_K) : sizeof(block_q5_K);
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)i * bsize;
        const block_q4_K *h = (const block_q4_K *)blk; /* d, dmin, scales: the same in Q5_K */
        const uint8_t *qs = type == PYLLM_TYPE_Q4_K ? h->qs : ((const block_q5_K *)blk)->qs;
        uint8_t sc[8], mn[8], q[32];
        kquant_scales(h->scales, sc, mn);
        const float d = _cvtsh_ss(h->d), dmin = _cvtsh_ss(h->dmin);
        for (int sb = 0; sb < 8; sb++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * (sb / 2)));
            __m256i v = _mm256_and_si256(sb % 2 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0F));
            if (type == PYLLM_TYPE_Q5_K) {
                const __m256i qh = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh);
                const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(sb)), _mm256_set1_epi8(1));
                v = _mm256_or_si256(v, _mm256_slli_epi16(bit, 4));
            }
            _mm256_storeu_si256((__m256i *)q, v);
            const __m256 ds = _mm256_set1_ps(d * sc[sb]), dm = _mm256_set1_ps(dmin * mn[sb]);
            for (int l = 0; l < 32; l += 8) avx2_dequantize8(q + l, ds, dm, dst + 32 * sb + l);
        }
    }
}

AVX2_TARGET void kern_x86_dequantize_row_q4_k_avx2(const void *src, float *dst, int n) {
    avx2_dequantize_row_q45_k(PYLLM_TYPE_Q4_K, src, dst, n);
}

AVX2_TARGET void kern_x86_dequantize_row_q5_k_avx2(const void *src, float *dst, int n) {
    avx2_dequantize_row_q45_k(PYLLM_TYPE_Q5_K, src, dst, n);
}

/* Q6_K: each 32 values unpacked as the matmul does, less 32 (signed bytes), then times their scale. */
AVX2_TARGET void kern_x86_dequantize_row_q6_k_avx2(const void *src, float *dst, int n) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        const block_q6_K *b = (const block_q6_K *)src + i;
        const float d = _cvtsh_ss(b->d);
        int8_t q[32];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
                const __m256i qh = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)),
                                                    _mm_cvtsi32_si128(2 * k));
                const __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i v = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
                _mm256_storeu_si256((__m256i *)q, _mm256_sub_epi8(v, _mm256_set1_epi8(32)));
                const int at = 128 * h + 32 * k;
                for (int l = 0; l < 32; l += 8) {
                    const __m256 ds = _mm256_set1_ps(d * b->scales[(at + l) / 16]);
                    __m256 v8 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + l))));
                    _mm256_storeu_ps(dst + at + l, _mm256_mul_ps(ds, v8));
                }
            }
    }
}

/* 32 floats to int8 by id (rounding to nearest even), in element order; returns the 4 vectors of int32. */
AVX2_INLINE void avx2_quantize32(const float *v, __m256 id, int8_t *out, __m256i *q) {
    for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 8 * i), id));
    /* the packs interleave 128-bit lanes: put the 4-byte groups back in element order */
    __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                                                                _mm256_packs_epi32(q[2], q[3])),
                                             _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)out, q8);
}

AVX2_TARGET void kern_x86_quantize_block_q8k_avx2(const float *v, void *out_) {
    block_q8k *out = out_;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < QK_K; i += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK_K; j += 32) {
        __m256i q[4];
        avx2_quantize32(v + j, _mm256_set1_ps(id), out->qs + j, q);
        out->bsums[j / 16] = (int16_t)avx2_hsum_i32(_mm256_add_epi32(q[0], q[1]));
        out->bsums[j / 16 + 1] = (int16_t)avx2_hsum_i32(_mm256_add_epi32(q[2], q[3]));
    }
    out->d = d;
}

AVX2_TARGET void kern_x86_quantize_block_avx2(const float *v, void *out_) {
    block_q8x *out = out_;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        a[i] = _mm256_loadu_ps(v + 8 * i);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, a[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float d = _mm_cvtss_f32(m) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    __m256i q[4], sum = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) { /* cvtps rounds to nearest even, as rintf does */
        q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(a[i], _mm256_set1_ps(id)));
        sum = _mm256_add_epi32(sum, q[i]);
    }
    /* the packs interleave 128-bit lanes: put the 4-byte groups back in element order */
    __m256i q16 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                                                         _mm256_packs_epi32(q[2], q[3])),
                                      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)out->qs, q16);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    out->d = d;
    out->s = d * (float)_mm_cvtsi128_si32(s4);
}

AVX2_INLINE float avx2_dot(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float sum = avx2_hsum(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* exp(x) = 2^n * p(r), |relative error| < 2e-7 for -87 <= x < 88.4; below -87 it is exp(-87),
 * from 88.4 to 89 infinity (n = 128). Callers cap x at 89: past it the exponent bits overflow. */
AVX2_INLINE __m256 avx2_exp(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x); /* ln 2, split in two */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.98756912e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.39819994e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.33345205e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.16657962e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.66666657e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* silu(g) * u = g / (1 + exp(-g)) * u for 8 values. exp's argument is capped at 89, past the
 * float range, where avx2_exp gives infinity: every g below -88.4 yields 0 (exactly, below
 * 5e-37). A NaN g stays NaN: it is the dividend. */
AVX2_INLINE void avx2_swiglu8(float *g, const float *u) {
    __m256 gv = _mm256_loadu_ps(g);
    __m256 e = avx2_exp(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv), _mm256_set1_ps(89.0f)));
    __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(g, _mm256_mul_ps(silu, _mm256_loadu_ps(u)));
}

AVX2_TARGET void kern_x86_swiglu_avx2(float *g, const float *u, int n) {
    for (int i = 0; i < n; i += 8) avx2_swiglu8(g + i, u + i);
}

/* gelu_tanh(g) * u = g / (1 + exp(-2y)) * u, y = sqrt(2/pi) (g + 0.044715 g^3), for 8 values, in
 * the order of the portable loop's operations (kern_geglu), capped as in avx2_swiglu8. */
AVX2_INLINE void avx2_geglu8(float *g, const float *u) {
    __m256 gv = _mm256_loadu_ps(g);
    __m256 cube = _mm256_mul_ps(_mm256_mul_ps(gv, gv), gv);
    __m256 inner = _mm256_add_ps(gv, _mm256_mul_ps(_mm256_set1_ps(0.044715f), cube));
    __m256 arg = _mm256_mul_ps(_mm256_set1_ps(-1.59576912f), inner); /* -2 sqrt(2/pi) */
    __m256 e = avx2_exp(_mm256_min_ps(arg, _mm256_set1_ps(89.0f)));
    __m256 gelu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(g, _mm256_mul_ps(gelu, _mm256_loadu_ps(u)));
}

AVX2_TARGET void kern_x86_geglu_avx2(float *g, const float *u, int n) {
    for (int i = 0; i < n; i += 8) avx2_geglu8(g + i, u + i);
}

/* Keys of up to this size are padded to a group of 8 at the end of a run (see attend_pad_keys). */
#define ATTEND_PAD_MAX_DIM 256

/* The last n < 8 keys of a run copied to pad (head_dim floats apart) and zeros after them, so that
 * they go through the 8-key dot product like every other key; returns n. */
static inline int attend_pad_keys(const float *k, int n, int kv_stride, int head_dim, float *pad) {
    for (int t = 0; t < 8; t++)
        if (t < n) memcpy(pad + (size_t)t * head_dim, k + (size_t)t * kv_stride, (size_t)head_dim * sizeof(float));
        else memset(pad + (size_t)t * head_dim, 0, (size_t)head_dim * sizeof(float));
    return n;
}

/* Scores of 8 consecutive keys at once: eight independent accumulators (a single one would make
 * every key wait on a chain of dependent FMAs), reduced together by a tree of horizontal adds. */
AVX2_INLINE __m256 avx2_dot8(const float *q, const float *k, int kv_stride, int head_dim) {
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < head_dim; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        for (int r = 0; r < 8; r++)
            acc[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (size_t)r * kv_stride + i), acc[r]);
    }
    /* hadd pairs up lanes within each 128-bit half: after two rounds lane r of the low half holds
     * key r's sum over its accumulator's low half (r < 4), the high half the rest */
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

AVX2_INLINE float avx2_hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* scores[j] = exp(scores[j] - max) for j < n_pos; returns their sum. */
AVX2_INLINE float avx2_softmax_numerators(float *scores, int n_pos, float max) {
    __m256 total8 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n_pos; j += 8) {
        __m256 e = avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(max)));
        _mm256_storeu_ps(scores + j, e);
        total8 = _mm256_add_ps(total8, e);
    }
    float total = avx2_hsum(total8);
    for (; j < n_pos; j++) {
        scores[j] = expf(scores[j] - max);
        total += scores[j];
    }
    return total;
}

AVX2_INLINE void avx2_scale(float *out, int n, float factor) {
    const __m256 f = _mm256_set1_ps(factor);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), f));
    for (; i < n; i++) out[i] *= factor;
}

/* Attention in the AVX-512 kernels' order of float operations (avx512_attend_heads), for head
 * sizes that are multiples of 16 up to ATTEND_PAD_MAX_DIM: a score's 16 float lanes as two
 * registers (lane l sums q_i k_i over i = 16m + l), folded lo + hi, then avx2_dot8's tree of
 * horizontal adds; the value sum per column in two chains, over even and odd positions (counted
 * over all the runs), added at the end. So both x86 families give a model the same attention. */
AVX2_INLINE __m128 avx2_dot4x16(const int H, const float *q, const float *k, int kv_stride) {
    __m256 lo[4], hi[4], half[4];
    for (int r = 0; r < 4; r++) lo[r] = hi[r] = _mm256_setzero_ps();
    for (int i = 0; i < H; i += 16) {
        const __m256 ql = _mm256_loadu_ps(q + i), qh = _mm256_loadu_ps(q + i + 8);
        for (int r = 0; r < 4; r++) {
            lo[r] = _mm256_fmadd_ps(ql, _mm256_loadu_ps(k + (size_t)r * kv_stride + i), lo[r]);
            hi[r] = _mm256_fmadd_ps(qh, _mm256_loadu_ps(k + (size_t)r * kv_stride + i + 8), hi[r]);
        }
    }
    for (int r = 0; r < 4; r++) half[r] = _mm256_add_ps(lo[r], hi[r]);
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* Scores of 8 consecutive keys, times scale. */
AVX2_INLINE __m256 avx2_scores8x16(const int H, const float *q, const float *k, int kv_stride, float scale) {
    const __m256 s = _mm256_set_m128(avx2_dot4x16(H, q, k + (size_t)4 * kv_stride, kv_stride), avx2_dot4x16(H, q, k, kv_stride));
    return _mm256_mul_ps(_mm256_set1_ps(scale), s);
}

/* out = sum_j p[j] v_j over W (16 or 32) columns from `col`: even and odd positions in chains of their own. */
AVX2_INLINE void avx2_weighted_sum_eo(const int W, const float *p, const kern_kv_run *runs, int n_runs, int kv_stride,
                                      int col, float *out) {
    __m256 even[4], odd[4];
    for (int i = 0; i < W / 8; i++) even[i] = odd[i] = _mm256_setzero_ps();
    int at = 0; /* the run's first position */
    for (int r = 0; r < n_runs; at += runs[r].n, r++) {
        const float *v = runs[r].v + col;
        const int n = runs[r].n;
        int j = 0;
        if (at % 2 && n > 0) { /* position `at` is odd: its chains are the odd ones, wherever runs start */
            for (int i = 0; i < W / 8; i++) odd[i] = _mm256_fmadd_ps(_mm256_set1_ps(p[at]), _mm256_loadu_ps(v + 8 * i), odd[i]);
            j = 1;
        }
        for (; j + 2 <= n; j += 2) {
            const float *v0 = v + (size_t)j * kv_stride, *v1 = v0 + kv_stride;
            const __m256 p0 = _mm256_set1_ps(p[at + j]), p1 = _mm256_set1_ps(p[at + j + 1]);
            for (int i = 0; i < W / 8; i++) {
                even[i] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * i), even[i]);
                odd[i] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 8 * i), odd[i]);
            }
        }
        if (j < n)
            for (int i = 0; i < W / 8; i++)
                even[i] = _mm256_fmadd_ps(_mm256_set1_ps(p[at + j]), _mm256_loadu_ps(v + (size_t)j * kv_stride + 8 * i), even[i]);
    }
    for (int i = 0; i < W / 8; i++) _mm256_storeu_ps(out + 8 * i, _mm256_add_ps(even[i], odd[i]));
}

AVX2_INLINE void avx2_attend16(const int H, const float *q, const kern_kv_run *runs, int n_runs, int kv_stride,
                               int n_pos, float scale, float *scores, float *out) {
    __m256 max8 = _mm256_set1_ps(-INFINITY);
    float max = -INFINITY;
    int at = 0;
    for (int r = 0; r < n_runs; at += runs[r].n, r++) {
        const float *k = runs[r].k;
        int j = 0;
        for (; j + 8 <= runs[r].n; j += 8) {
            const __m256 s = avx2_scores8x16(H, q, k + (size_t)j * kv_stride, kv_stride, scale);
            _mm256_storeu_ps(scores + at + j, s);
            max8 = _mm256_max_ps(max8, s);
        }
        if (j < runs[r].n) { /* the run's last keys, padded to 8: the same arithmetic as the rest */
            float pad[8 * ATTEND_PAD_MAX_DIM], s8[8];
            const int left = attend_pad_keys(k + (size_t)j * kv_stride, runs[r].n - j, kv_stride, H, pad);
            _mm256_storeu_ps(s8, avx2_scores8x16(H, q, pad, H, scale));
            for (int t = 0; t < left; t++) {
                scores[at + j + t] = s8[t];
                max = s8[t] > max ? s8[t] : max;
            }
        }
    }
    const float m8 = avx2_hmax(max8);
    max = m8 > max ? m8 : max;
    const float total = avx2_softmax_numerators(scores, n_pos, max);
    int col = 0;
    for (; col + 32 <= H; col += 32) avx2_weighted_sum_eo(32, scores, runs, n_runs, kv_stride, col, out + col);
    if (col < H) avx2_weighted_sum_eo(16, scores, runs, n_runs, kv_stride, col, out + col);
    avx2_scale(out, H, 1.0f / total);
}

AVX2_TARGET void kern_x86_attend_avx2(const float *q, const kern_kv_run *runs, int n_runs, int kv_stride,
                                      int n_pos, int head_dim, float scale, float *scores,
                                      float *out) {
    if (head_dim % 16 == 0 && head_dim <= ATTEND_PAD_MAX_DIM) {
        switch (head_dim) {
        case 64: avx2_attend16(64, q, runs, n_runs, kv_stride, n_pos, scale, scores, out); return;
        case 128: avx2_attend16(128, q, runs, n_runs, kv_stride, n_pos, scale, scores, out); return;
        case 256: avx2_attend16(256, q, runs, n_runs, kv_stride, n_pos, scale, scores, out); return;
        default: avx2_attend16(head_dim, q, runs, n_runs, kv_stride, n_pos, scale, scores, out); return;
        }
    }
    /* other head sizes: 8 keys at a time by avx2_dot8, every column's value sum in one chain */
    __m256 max8 = _mm256_set1_ps(-INFINITY);
    float max = -INFINITY;
    float *sr = scores;
    for (int r = 0; r < n_runs; sr += runs[r].n, r++) {
        const float *k = runs[r].k;
        int j = 0;
        if (head_dim % 8 == 0) {
            for (; j + 8 <= runs[r].n; j += 8) {
                __m256 s = _mm256_mul_ps(_mm256_set1_ps(scale), avx2_dot8(q, k + (size_t)j * kv_stride, kv_stride, head_dim));
                _mm256_storeu_ps(sr + j, s);
                max8 = _mm256_max_ps(max8, s);
            }
            if (j < runs[r].n && head_dim <= ATTEND_PAD_MAX_DIM) {
                /* the run's last keys, padded to 8, by the same arithmetic: a key's score does not
                 * depend on where its run starts (a session's cache and a paged one differ there) */
                float pad[8 * ATTEND_PAD_MAX_DIM], s8[8];
                const int left = attend_pad_keys(k + (size_t)j * kv_stride, runs[r].n - j, kv_stride, head_dim, pad);
                _mm256_storeu_ps(s8, _mm256_mul_ps(_mm256_set1_ps(scale), avx2_dot8(q, pad, head_dim, head_dim)));
                for (int t = 0; t < left; t++, j++) {
                    sr[j] = s8[t];
                    max = sr[j] > max ? sr[j] : max;
                }
            }
        }
        for (; j < runs[r].n; j++) {
            sr[j] = scale * avx2_dot(q, k + (size_t)j * kv_stride, head_dim);
            max = sr[j] > max ? sr[j] : max;
        }
    }
    const float max_8 = avx2_hmax(max8);
    max = max_8 > max ? max_8 : max;
    float total = avx2_softmax_numerators(scores, n_pos, max);
    for (int i = 0; i < head_dim; i++) out[i] = 0.0f;
    const float *p = scores;
    for (int r = 0; r < n_runs; p += runs[r].n, r++)
        for (int jj = 0; jj < runs[r].n; jj++) {
            const float *vj = runs[r].v + (size_t)jj * kv_stride;
            int i = 0;
            for (; i + 8 <= head_dim; i += 8)
                _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_set1_ps(p[jj]), _mm256_loadu_ps(vj + i),
                                                          _mm256_loadu_ps(out + i)));
            for (; i < head_dim; i++) out[i] += p[jj] * vj[i];
        }
    avx2_scale(out, head_dim, 1.0f / total);
}

/* ------------------------------------------------------------------------------------------ */
/* AVX-512 kernels: matmuls and attention (activation quantization and softmax use the AVX2 code,
 * which every AVX-512 CPU runs). vpdpbusd (VNNI) multiplies and sums four byte pairs per lane in
 * one instruction. The 32-value quantized types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) share the lane
 * kernels below: 16 weight rows in the 16 lanes for batches, a row at a time for single tokens,
 * with one order of float operations. Q4_K and Q6_K have lane kernels of their own
 * (avx512_matmul_klanes); Q5_K uses 2x4 tiles for prompts, and float weights 4x6 (32 vector
 * registers leave room for their accumulators). Decoding reads one weight row at a
 * time front to back, as the AVX2 code does (against 8-row tiles, SmolLM2 tg128 at 2 threads: F16
 * +30%, Q4_1 +15%, Q4_0 +22%, Q8_0 +28%). */
#define AVX512_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* A register's 16 lanes summed: avx2_sum16's tree. */
AVX512_INLINE float avx512_sum16(__m512 v) {
    return avx2_sum16(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* Blocks b and b+1 (only b when `pair` is 0, the other half then zero, Q8_0's 128) of a quantized
 * row as 64 unsigned bytes in element order: Q4_0's and Q4_1's nibbles, Q5_0's and Q5_1's 5-bit
 * values, Q8_0's values plus 128. */
AVX512_INLINE __m512i avx512_weights(const int type, const uint8_t *blk, size_t bsize, int pair) {
    if (type == PYLLM_TYPE_Q8_0) {
        __m256i lo = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i hi = pair ? _mm256_loadu_si256((const __m256i *)(blk + bsize + 2)) : _mm256_setzero_si256();
        return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8((char)0x80));
    }
    const size_t off = type == PYLLM_TYPE_Q4_0 ? 2 : type == PYLLM_TYPE_Q4_1 ? 4
                     : type == PYLLM_TYPE_Q5_0 ? 6 : 8; /* the nibbles follow d, m and qh */
    __m128i q0 = _mm_loadu_si128((const __m128i *)(blk + off));
    __m128i q1 = pair ? _mm_loadu_si128((const __m128i *)(blk + bsize + off)) : _mm_setzero_si128();
    __m256i raw = _mm256_set_m128i(q1, q0);
    __m256i mask = _mm256_set1_epi8(0x0F);
    __m256i lo = _mm256_and_si256(raw, mask), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
    /* 128-bit lanes [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1]: elements 0-15, 16-31 of each block */
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
    if (type == PYLLM_TYPE_Q5_0 || type == PYLLM_TYPE_Q5_1) {
        /* bit j of the two blocks' qh (block b's in the low half) is the 5th bit of byte j */
        uint32_t h0, h1 = 0;
        memcpy(&h0, blk + off - 4, sizeof h0);
        if (pair) memcpy(&h1, blk + bsize + off - 4, sizeof h1);
        v = _mm512_or_si512(v, _mm512_maskz_mov_epi8((__mmask64)h0 | (__mmask64)h1 << 32,
                                                     _mm512_set1_epi8(0x10)));
    }
    return v;
}

/* The lane kernels: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 with one order of float operations for batches
 * and for single tokens, so that a token's result does not depend on the batch it came in.
 * vpdpbusd multiplies unsigned by signed bytes: each type's weights become unsigned bytes u (as
 * avx512_weights gives them) with an exact integer offset o, folded into the sum it starts from:
 *   Q4_0  u = q (0..15), o = 8:    (q - 8) . x = u . x - 8 sum(x)
 *   Q5_0  u = q (0..31), o = 16:   (q - 16) . x = u . x - 16 sum(x)
 *   Q8_0  u = q + 128,   o = 128:  q . x = u . x - 128 sum(x)
 *   Q4_1, Q5_1  u = q,   o = 0; value d q + m: (d q + m) . x = d (q . x) + m sum(x)
 * Per weight row and token, block b's exact integer dot I_b = u . x - o sum(x) times the product of
 * the two blocks' scales is added by one fused multiply-add into one of four float sums A_j,
 * j = (b / 2) % 4, in block order from +0; Q4_1 and Q5_1 then add m_b s_b (s_b: the activation
 * block's d sum(x)) into the same sum by a second one. The result is (A_0 + A_2) + (A_1 + A_3).
 *   Batches of LANES_PROMPT_MIN tokens and more (avx512_lanes_prompt) put 16 weight rows in the 16
 * lanes: the rows' blocks are unpacked once per matmul, by a transpose in registers, to bytes laid
 * out by 4-byte group (lane r holds row r's bytes 4k..4k+3 of block b), and each vpdpbusd
 * multiplies them by 4 activation bytes broadcast to every lane, so an instruction does 64 useful
 * products and I_b comes out whole in each lane: one conversion and one multiply-add (two with m)
 * per block, 16 rows and token.
 *   Single tokens (avx512_lanes_row) read a row front to back two blocks per register, sum each
 * block's lanes exactly in integers (avx512_block_sums16), get the 16 blocks' f16 scales in lane
 * order with a few vpermt2w over the row's bytes, and add the blocks four at a time into the four
 * sums, one per 128-bit lane.
 *   Against the 4x4 tiles these replaced (SmolLM2, 2 threads, docs/performance.md): a decode step
 * of 8 sequences 19.2 -> 9.9 ms (Q4_1), pp512 2.5x (Q4_1), 2.1x (Q4_0), 1.9x (Q8_0); decoding Q4_1
 * +11%, Q4_0 +6%, but Q8_0 -6%: its 16 scales per chunk cost five permutes over 544 bytes. */

/* The offset o of a type's unsigned weights (above). */
AVX512_INLINE int lanes_offset(const int type) {
    return type == PYLLM_TYPE_Q8_0 ? 128 : type == PYLLM_TYPE_Q4_0 ? 8 : type == PYLLM_TYPE_Q5_0 ? 16 : 0;
}

/* The integer sums of 16 blocks from NP (8, or 4: the last 8 blocks are 0) registers of block pairs
 * (v[p]: 8 lanes of partial sums of block 2p, then 8 of block 2p + 1): lane 4q + i holds block
 * LANE_BLOCK(q, i). */
#define LANE_BLOCK(q, i) (8 * ((q) / 2) + 2 * (i) + (q) % 2)
AVX512_INLINE __m512i avx512_block_sums16(const int NP, const __m512i *v) {
    __m512i w[4], x[2];
    for (int i = 0; i < NP / 2; i++) /* 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] */
        w[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < NP / 4; i++) /* 128-bit lane j: the sums of lane j of v[4i] .. v[4i + 3] */
        x[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(w[2 * i], w[2 * i + 1]),
                                _mm512_unpackhi_epi64(w[2 * i], w[2 * i + 1]));
    if (NP == 4) x[1] = _mm512_setzero_si512();
    /* 128-bit lanes 0 + 1 of a pair register are its first block, 2 + 3 its second */
    return _mm512_add_epi32(_mm512_shuffle_i32x4(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The lane order of avx512_block_sums16 as indexes, times `stride` (bytes between blocks). */
AVX512_INLINE __m512i avx512_lane_blocks(int stride) {
    const __m512i block = _mm512_setr_epi32(LANE_BLOCK(0, 0), LANE_BLOCK(0, 1), LANE_BLOCK(0, 2), LANE_BLOCK(0, 3),
                                            LANE_BLOCK(1, 0), LANE_BLOCK(1, 1), LANE_BLOCK(1, 2), LANE_BLOCK(1, 3),
                                            LANE_BLOCK(2, 0), LANE_BLOCK(2, 1), LANE_BLOCK(2, 2), LANE_BLOCK(2, 3),
                                            LANE_BLOCK(3, 0), LANE_BLOCK(3, 1), LANE_BLOCK(3, 2), LANE_BLOCK(3, 3));
    return _mm512_mullo_epi32(block, _mm512_set1_epi32(stride));
}

/* The activation scales d (and, for Q4_1 and Q5_1, the sums s) of one token's blocks in the lane
 * order of avx512_block_sums16, 16 per group of 16 blocks, 0 past the last block (xd, xs:
 * ceil(nb / 16) * 16 floats). */
AVX512_INLINE void avx512_lanes_xscales(const int type, const block_q8x *x, int nb, float *xd, float *xs) {
    for (int c0 = 0; c0 < nb; c0 += 16)
        for (int l = 0; l < 16; l++) {
            const int b = c0 + LANE_BLOCK(l / 4, l % 4);
            xd[c0 + l] = b < nb ? x[b].d : 0.0f;
            if (x86_has_min(type)) xs[c0 + l] = b < nb ? x[b].s : 0.0f;
        }
}

/* The f16 scales d (and, for Q4_1 and Q5_1, offsets m) of the 16 blocks from blk0 (0 for those
 * past the first `left`, at most NB: 16 or 8) as floats in the lane order of avx512_block_sums16:
 * the blocks' bytes read as 128-byte windows, each word picked out by a two-register permute
 * (vpermt2w), d into the low 16 words and m into the high 16 (a block's m follows its d in the same
 * window: both types' blocks are a whole number of 4-byte words); what lies past the blocks is not
 * read. */
AVX512_INLINE void avx512_lanes_scales16(const int type, const int NB, const uint8_t *blk0, int left,
                                         __m512 *d, __m512 *m) {
    const int bsize = (int)x86_block_bytes(type), wpb = bsize / 2; /* words per block */
    const int bytes = (left < NB ? left : NB) * bsize;
    const int NW = (NB * bsize + 127) / 128;
    __m512i win[10];
    for (int i = 0; i < 2 * NW; i++) {
        const int n = bytes - 64 * i;
        const __mmask64 mk = n >= 64 ? ~(__mmask64)0 : n <= 0 ? 0 : ((__mmask64)1 << n) - 1;
        win[i] = _mm512_maskz_loadu_epi8(mk, blk0 + 64 * i);
    }
#define LANE_WORD(l) (wpb * LANE_BLOCK((l) / 4, (l) % 4))
#define LANE_M(l) (x86_has_min(type) ? LANE_WORD(l) + 1 : 0)
    const __m512i idx = _mm512_and_si512(_mm512_set_epi16(
        LANE_M(15), LANE_M(14), LANE_M(13), LANE_M(12), LANE_M(11), LANE_M(10), LANE_M(9), LANE_M(8),
        LANE_M(7), LANE_M(6), LANE_M(5), LANE_M(4), LANE_M(3), LANE_M(2), LANE_M(1), LANE_M(0),
        LANE_WORD(15), LANE_WORD(14), LANE_WORD(13), LANE_WORD(12), LANE_WORD(11), LANE_WORD(10), LANE_WORD(9), LANE_WORD(8),
        LANE_WORD(7), LANE_WORD(6), LANE_WORD(5), LANE_WORD(4), LANE_WORD(3), LANE_WORD(2), LANE_WORD(1), LANE_WORD(0)),
        _mm512_set1_epi16(63));
    __m512i v = _mm512_permutex2var_epi16(win[0], idx, win[1]);
    for (int p = 1; p < NW; p++) { /* the lanes whose words lie in window p */
        __mmask32 in = 0;
        for (int l = 0; l < 16; l++) in |= (__mmask32)(LANE_WORD(l) / 64 == p) << l;
        if (x86_has_min(type)) in |= in << 16;
        v = _mm512_mask_mov_epi16(v, in, _mm512_permutex2var_epi16(win[2 * p], idx, win[2 * p + 1]));
    }
#undef LANE_M
#undef LANE_WORD
    *d = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
    *m = x86_has_min(type) ? _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1)) : _mm512_setzero_ps();
}

/* One token's activations as avx512_lanes_row reads them, per pair of blocks: the two blocks' 64
 * bytes, and per 4-byte lane -o times their sum. */
typedef struct {
    __m512i x, fix;
} lanes_xpair;

AVX512_INLINE lanes_xpair avx512_lanes_xpair(const int type, const block_q8x *x, int b, int nb) {
    const __m512i zero = _mm512_setzero_si512();
    const __m256i xhi = b + 1 < nb ? _mm256_loadu_si256((const __m256i *)x[b + 1].qs) : _mm256_setzero_si256();
    lanes_xpair p;
    p.x = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[b].qs)), xhi, 1);
    p.fix = lanes_offset(type)
        ? _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8((char)lanes_offset(type)), p.x))
        : zero;
    return p;
}

/* Blocks c0 .. c0 + 15 of a row times one token (all 16 there if `full`, else those below nb; NP = 4:
 * at most 8 of them), added into the four sums in acc. xp, xd, xs: as in avx512_lanes_row. */
AVX512_INLINE __m128 avx512_lanes_chunk(const int type, const int full, const int NP, const uint8_t *row,
                                        const block_q8x *x, const lanes_xpair *xp, const float *xd,
                                        const float *xs, int c0, int nb, __m128 acc) {
    const size_t bsize = x86_block_bytes(type);
    const uint8_t *blk0 = row + (size_t)c0 * bsize;
    __m512i v[8];
#pragma GCC unroll 8
    for (int p = 0; p < NP; p++) {
        const int b = c0 + 2 * p;
        if (!full && b >= nb) { v[p] = _mm512_setzero_si512(); continue; }
        const uint8_t *blk = blk0 + (size_t)2 * p * bsize;
        PREFETCH_AHEAD(blk, PREFETCH_BYTES);
        const lanes_xpair xb = xp ? xp[b / 2] : avx512_lanes_xpair(type, x, b, nb);
        v[p] = _mm512_dpbusd_epi32(xb.fix, avx512_weights(type, blk, bsize, full || b + 1 < nb), xb.x);
    }
    const int left = full ? 16 : nb - c0;
    const __mmask16 in = _mm512_cmplt_epi32_mask(avx512_lane_blocks(1), _mm512_set1_epi32(left));
    const __m512i at = avx512_lane_blocks((int)sizeof(block_q8x));
    /* x[b].d and x[b].s, gathered where xd, xs are NULL */
    const __m512 xdv = xd ? _mm512_loadu_ps(xd + c0) : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, &x[c0].d, 1);
    __m512 xsv = _mm512_setzero_ps();
    if (x86_has_min(type))
        xsv = xs ? _mm512_loadu_ps(xs + c0) : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, &x[c0].s, 1);
    __m512 wd, wm;
    avx512_lanes_scales16(type, 2 * NP, blk0, left, &wd, &wm);
    const __m512 s = _mm512_mul_ps(wd, xdv);
    const __m512 f = _mm512_cvtepi32_ps(avx512_block_sums16(NP, v));
    /* quarter q: the blocks of 128-bit lane q, one per sum */
#define LANES_QUARTER(q)                                                                               \
    acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(f, q), _mm512_extractf32x4_ps(s, q), acc);              \
    if (x86_has_min(type)) acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(wm, q), _mm512_extractf32x4_ps(xsv, q), acc);
    LANES_QUARTER(0)
    LANES_QUARTER(1)
    if (NP == 8) { /* else blocks 8 .. 15 are absent: adding their 0 would change no sum */
        LANES_QUARTER(2)
        LANES_QUARTER(3)
    }
#undef LANES_QUARTER
    return acc;
}

/* One row times one token: xp its pairs from avx512_lanes_xpair (or NULL: made here), xd and xs its
 * scales and sums from avx512_lanes_xscales (or NULL: gathered here). */
AVX512_INLINE float avx512_lanes_row(const int type, const uint8_t *row, const block_q8x *x, const lanes_xpair *xp,
                                     const float *xd, const float *xs, int nb) {
    __m128 acc = _mm_setzero_ps();
    int c0 = 0;
    for (; c0 + 16 <= nb; c0 += 16) acc = avx512_lanes_chunk(type, 1, 8, row, x, xp, xd, xs, c0, nb, acc);
    if (c0 + 8 < nb) acc = avx512_lanes_chunk(type, 0, 8, row, x, xp, xd, xs, c0, nb, acc);
    else if (c0 < nb) acc = avx512_lanes_chunk(type, 0, 4, row, x, xp, xd, xs, c0, nb, acc);
    const __m128 half = _mm_add_ps(acc, _mm_movehl_ps(acc, acc)); /* A0 + A2, A1 + A3 */
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

/* 16 bytes at p, p + rb, p + 2 rb, p + 3 rb in the four 128-bit lanes (zero for rows past the first n). */
AVX512_INLINE __m512i avx512_rows4(const uint8_t *p, size_t rb, int n) {
    __m512i v = _mm512_castsi128_si512(n > 0 ? _mm_loadu_si128((const __m128i *)p) : _mm_setzero_si128());
    v = _mm512_inserti32x4(v, n > 1 ? _mm_loadu_si128((const __m128i *)(p + rb)) : _mm_setzero_si128(), 1);
    v = _mm512_inserti32x4(v, n > 2 ? _mm_loadu_si128((const __m128i *)(p + 2 * rb)) : _mm_setzero_si128(), 2);
    return _mm512_inserti32x4(v, n > 3 ? _mm_loadu_si128((const __m128i *)(p + 3 * rb)) : _mm_setzero_si128(), 3);
}

/* Four registers of 4 rows' 4 dwords (z[j]: 128-bit lane q holds row 4j + q) to four of 16 rows
 * (out[k]: lane r holds dword k of row r): a dword permute within each register puts dword k of
 * its rows in lane k, then a 4 x 4 transpose of 128-bit lanes. */
AVX512_INLINE void avx512_transpose16x4(const __m512i *z, __m512i *out) {
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i t[4];
    for (int j = 0; j < 4; j++) t[j] = _mm512_permutexvar_epi32(idx, z[j]);
    const __m512i a = _mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i b = _mm512_shuffle_i32x4(t[2], t[3], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i c = _mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i d = _mm512_shuffle_i32x4(t[2], t[3], _MM_SHUFFLE(3, 2, 3, 2));
    out[0] = _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    out[1] = _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    out[2] = _mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(2, 0, 2, 0));
    out[3] = _mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(3, 1, 3, 1));
}

/* 16 rows (nr of them real, the others zero) unpacked for avx512_lanes_prompt: wq[(b * 8 + k) * 16 + r]
 * holds bytes 4k..4k+3 of row r's block b as avx512_weights's unsigned bytes, wd[b * 16 + r] its
 * scale d, wm[b * 16 + r] its offset m (Q4_1, Q5_1). The scales are gathered with int32 offsets:
 * 16 rb must fit an int. */
AVX512_INLINE void avx512_lanes_unpack16(const int type, const uint8_t *w, size_t rb, int nr, int nb,
                                         uint32_t *wq, float *wd, float *wm, const uint8_t *next) {
    const size_t bsize = x86_block_bytes(type);
    const __mmask16 real = (__mmask16)((1u << nr) - 1);
    const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32((int)rb));
    const __m512i m4 = _mm512_set1_epi8(0x0F), zero = _mm512_setzero_si512();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bsize;
        __m512i z[4], u[4], out[8];
        if (next) /* a block's share of the next 16 rows (16 bsize of their 16 rb bytes) */
            for (size_t o = (size_t)b * 16 * bsize; o < (size_t)(b + 1) * 16 * bsize; o += 64)
                PREFETCH_AHEAD(next, o);
        /* each row's first 4 bytes: d, then m (or the first quants) */
        const __m512i h = _mm512_mask_i32gather_epi32(zero, real, at, blk, 1);
        _mm512_storeu_ps(wd + (size_t)b * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)));
        if (x86_has_min(type))
            _mm512_storeu_ps(wm + (size_t)b * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))));
        if (type == PYLLM_TYPE_Q8_0) {
            for (int half = 0; half < 2; half++) { /* bytes 16 half .. 16 half + 15 */
                for (int j = 0; j < 4; j++) z[j] = avx512_rows4(blk + (size_t)4 * j * rb + 2 + 16 * half, rb, nr - 4 * j);
                avx512_transpose16x4(z, u);
                for (int k = 0; k < 4; k++) out[4 * half + k] = _mm512_xor_si512(u[k], _mm512_set1_epi8((char)0x80));
            }
        } else {
            const size_t off = type == PYLLM_TYPE_Q4_0 ? 2 : type == PYLLM_TYPE_Q4_1 ? 4
                             : type == PYLLM_TYPE_Q5_0 ? 6 : 8;
            for (int j = 0; j < 4; j++) z[j] = avx512_rows4(blk + (size_t)4 * j * rb + off, rb, nr - 4 * j);
            avx512_transpose16x4(z, u);
            for (int k = 0; k < 4; k++) { /* byte i of a block: element i low, i + 16 high */
                out[k] = _mm512_and_si512(u[k], m4);
                out[k + 4] = _mm512_and_si512(_mm512_srli_epi32(u[k], 4), m4);
            }
            if (type == PYLLM_TYPE_Q5_0 || type == PYLLM_TYPE_Q5_1) {
                /* bits 4k .. 4k + 3 of each row's qh (byte k / 2, nibble k % 2) over its 4 bytes */
                const __m512i qh = _mm512_mask_i32gather_epi32(zero, real, at, blk + off - 4, 1);
                for (int k = 0; k < 8; k++) {
                    const __m512i spread = _mm512_shuffle_epi8(qh, _mm512_add_epi8(
                        _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0), _mm512_set1_epi8((char)(k / 2))));
                    const __mmask64 bits = _mm512_test_epi8_mask(spread, _mm512_set1_epi32(k % 2 ? (int)0x80402010 : 0x08040201));
                    out[k] = _mm512_or_si512(out[k], _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10)));
                }
            }
        }
        for (int k = 0; k < 8; k++) _mm512_storeu_si512((void *)(wq + ((size_t)b * 8 + k) * 16), out[k]);
    }
}

/* C tokens (x, x + nb, ...) times the 16 unpacked rows; nx[t * nb + b] = -o times the sum of token
 * t's block b (unused where o is 0). Writes (or adds to) y[t * y_stride + r] for the nr real rows. */
AVX512_INLINE void avx512_lanes_prompt(const int type, const int C, const uint32_t *wq, const float *wd,
                                       const float *wm, int nr, const block_q8x *x, const int32_t *nx, int nb,
                                       float *y, int y_stride, int accumulate, const uint8_t *next) {
    const size_t bsize = x86_block_bytes(type);
    __m512 acc[4][4];
    for (int c = 0; c < C; c++)
        for (int j = 0; j < 4; j++) acc[c][j] = _mm512_setzero_ps();
    for (int b0 = 0; b0 < nb; b0 += 8) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const int b = b0 + i;
            if (b >= nb) break;
            if (next) /* a block's share of the next 16 rows (16 bsize of their 16 rb bytes) */
                for (size_t o = (size_t)b * 16 * bsize; o < (size_t)(b + 1) * 16 * bsize; o += 64)
                    PREFETCH_AHEAD(next, o);
            __m512i wv[8];
            for (int k = 0; k < 8; k++) wv[k] = _mm512_loadu_si512((const void *)(wq + ((size_t)b * 8 + k) * 16));
            const __m512 wdv = _mm512_loadu_ps(wd + (size_t)b * 16);
            const __m512 wmv = x86_has_min(type) ? _mm512_loadu_ps(wm + (size_t)b * 16) : _mm512_setzero_ps();
            for (int c = 0; c < C; c++) {
                const block_q8x *xb = x + (size_t)c * nb + b;
                __m512i dot = lanes_offset(type) ? _mm512_set1_epi32(nx[(size_t)c * nb + b]) : _mm512_setzero_si512();
                for (int k = 0; k < 8; k++) { /* 4 activation bytes, broadcast straight from memory */
                    int32_t xs;
                    memcpy(&xs, xb->qs + 4 * k, sizeof xs);
                    dot = _mm512_dpbusd_epi32(dot, wv[k], _mm512_set1_epi32(xs));
                }
                const __m512 s = _mm512_mul_ps(wdv, _mm512_set1_ps(xb->d));
                acc[c][i / 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[c][i / 2]);
                if (x86_has_min(type)) acc[c][i / 2] = _mm512_fmadd_ps(wmv, _mm512_set1_ps(xb->s), acc[c][i / 2]);
            }
        }
    }
    const __mmask16 rows = (__mmask16)((1u << nr) - 1);
    for (int c = 0; c < C; c++) {
        __m512 v = _mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][2]), _mm512_add_ps(acc[c][1], acc[c][3]));
        float *dst = y + (size_t)c * y_stride;
        if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(rows, dst), v);
        _mm512_mask_storeu_ps(dst, rows, v);
    }
}

/* Batches of at least this many tokens go through avx512_lanes_prompt, single tokens through
 * avx512_lanes_row. One threshold serves every type: from 2 tokens the rows unpacked once beat
 * reading them once per token for all five (SmolLM2's matmul shapes, 1 thread, CPU time, 2 tokens:
 * Q4_1 110 against 207 us, Q4_0 104 / 176, Q8_0 124 / 165, Q5_0 162 / 220, Q5_1 149 / 244), and
 * single tokens through the lanes decode at half the speed (SmolLM2 Q4_1 tg128, 1 thread: 51
 * against 113 tok/s). */
#define LANES_PROMPT_MIN 2

AVX512_INLINE void avx512_matmul_lanes(const int type, const pyllm_tensor *w, int r0, int r1,
                                       const block_q8x *xq, int n, float *y, int accumulate) {
    const int nb = w->cols / QK8X;
    const size_t rb = kern_row_bytes(type, w->cols);
    void *scratch = NULL;
    if (n >= LANES_PROMPT_MIN && rb <= INT_MAX / 16) {
        /* wq (nb * 512 bytes), wd and wm (nb * 64 each), nx (n * nb * 4) */
        const size_t bytes = (size_t)nb * (512 + 128) + (size_t)n * nb * 4;
        scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
    }
    if (scratch) {
        uint32_t *wq = scratch;
        float *wd = (float *)(wq + (size_t)nb * 128), *wm = wd + (size_t)nb * 16;
        int32_t *nx = (int32_t *)(wm + (size_t)nb * 16);
        if (lanes_offset(type)) avx2_lanes_offsets(lanes_offset(type), xq, (size_t)n * nb, nx);
        for (int r = r0; r < r1; r += 16) {
            const int nr = r1 - r < 16 ? r1 - r : 16;
            const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * rb;
            /* the unpack reads 16 rows at once, which the hardware prefetcher does not follow: the
             * first pass of 4 tokens asks for the next 16 rows, or with fewer tokens the unpack
             * (SmolLM2 Q4_1, 1 thread, CPU time, a step of 2 sequences: 10.6-11.9 ms, against 12.9
             * asking in its only pass; 4 and 8 sequences within the noise either way) */
            const uint8_t *next = r + 16 < r1 ? wr + 16 * rb : NULL;
            if (nr == 16) avx512_lanes_unpack16(type, wr, rb, 16, nb, wq, wd, wm, n < 4 ? next : NULL);
            else avx512_lanes_unpack16(type, wr, rb, nr, nb, wq, wd, wm, NULL);
            int t = 0;
            for (; t + 4 <= n; t += 4)
                avx512_lanes_prompt(type, 4, wq, wd, wm, nr, xq + (size_t)t * nb, nx + (size_t)t * nb, nb,
                                    y + (size_t)t * w->rows + r, w->rows, accumulate, t == 0 ? next : NULL);
            const block_q8x *xt = xq + (size_t)t * nb;
            const int32_t *nt = nx + (size_t)t * nb;
            float *yt = y + (size_t)t * w->rows + r;
            next = t == 0 ? next : NULL;
            switch (n - t) {
            case 3: avx512_lanes_prompt(type, 3, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate, next); break;
            case 2: avx512_lanes_prompt(type, 2, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate, next); break;
            case 1: avx512_lanes_prompt(type, 1, wq, wd, wm, nr, xt, nt, nb, yt, w->rows, accumulate, next); break;
            default: break;
            }
        }
        free(scratch);
        return;
    }
    /* a token at a time (also where the scratch could not be had: the same result, slower) */
    /* rows of up to 8192 values: the token's pairs and scales made once for all rows (longer ones
     * make them per row) */
    lanes_xpair xp[128];
    float xd[256], xs[256];
    for (int t = 0; t < n; t++) {
        const block_q8x *xt = xq + (size_t)t * nb;
        const int prep = nb <= 256;
        if (prep) {
            avx512_lanes_xscales(type, xt, nb, xd, xs);
            for (int b = 0; b < nb; b += 2) xp[b / 2] = avx512_lanes_xpair(type, xt, b, nb);
        }
        for (int r = r0; r < r1; r++) {
            float v = avx512_lanes_row(type, (const uint8_t *)w->data + (size_t)r * rb, xt, prep ? xp : NULL,
                                       prep ? xd : NULL, prep ? xs : NULL, nb);
            float *dst = y + (size_t)t * w->rows + r;
            *dst = accumulate ? *dst + v : v;
        }
    }
}

/* A K-quant super-block's scales: d, dmin (Q4_K, Q5_K), mins16 (Q4_K/Q5_K: min[s] in int16 lanes 2s,
 * 2s+1, as bsums; Q6_K: the 16 scales) and scales (Q4_K/Q5_K: the 8 scales as int16; Q6_K: the 16). */
AVX512_INLINE void avx512_kscales(const int type, const uint8_t *blk, float *d, float *dmin, __m256i *mins16,
                                  __m512i *scales) {
    if (type == PYLLM_TYPE_Q6_K) {
        const block_q6_K *q = (const block_q6_K *)blk;
        *d = _cvtsh_ss(q->d);
        *dmin = 0.0f;
        *mins16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q->scales));
        *scales = _mm512_castsi256_si512(*mins16);
    } else {
        const block_q4_K *q = (const block_q4_K *)blk; /* Q5_K starts the same way */
        uint64_t sc, mn;
        *d = _cvtsh_ss(q->d);
        *dmin = _cvtsh_ss(q->dmin);
        kquant_scales_packed(q->scales, &sc, &mn);
        const __m128i m8 = _mm_cvtsi64_si128((long long)mn);
        *mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        *scales = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
    }
}

/* Values 64j .. 64j + 63 of a K-quant super-block as bytes (*wq), and the scales of their sub-blocks
 * in the int16 lanes of maddubs's pair sums (*scale), from avx512_kscales's scales. */
AVX512_INLINE void avx512_kvalues(const int type, const uint8_t *blk, int j, __m512i scales, __m512i *wq,
                                  __m512i *scale) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i lane = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                          15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    if (type == PYLLM_TYPE_Q6_K) {
        /* half h = j / 2; j even: k = 0, 1 (low nibbles of ql[0..63]), j odd: k = 2, 3 (high) */
        const block_q6_K *q = (const block_q6_K *)blk;
        const int h = j / 2;
        const __m512i ql = _mm512_loadu_si512((const void *)(q->ql + 64 * h));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(q->qh + 32 * h));
        const __m512i lo = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(ql, 4) : ql, m4);
        /* bits 2k, 2k+1 of qh to bits 4, 5: k = 0, 1 or k = 2, 3 in the two halves */
        const __m512i qh2 = j % 2 ? _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1)
                                  : _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(qh, 4)),
                                                       _mm256_slli_epi16(qh, 2), 1);
        *wq = _mm512_or_si512(lo, _mm512_and_si512(qh2, m30));
        /* sub-blocks 4j .. 4j+3, 16 values (8 int16 lanes of pair sums) each */
        *scale = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(4 * j)), _mm512_srli_epi16(lane, 3)), scales);
    } else {
        const uint8_t *qs = type == PYLLM_TYPE_Q4_K ? ((const block_q4_K *)blk)->qs : ((const block_q5_K *)blk)->qs;
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1);
        v = _mm512_and_si512(v, m4);
        if (type == PYLLM_TYPE_Q5_K) { /* bit 2j of qh[l] over value 64j + l, bit 2j+1 over 64j + 32 + l */
            const __m256i qh = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh),
                                                _mm_cvtsi32_si128(2 * j));
            const __m512i bits = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 1), 1);
            v = _mm512_or_si512(v, _mm512_slli_epi16(_mm512_and_si512(bits, _mm512_set1_epi8(1)), 4));
        }
        *wq = v;
        /* sub-block 2j in the low 16 int16 lanes, 2j+1 in the high */
        *scale = _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16((short)(2 * j)), _mm512_srli_epi16(lane, 4)), scales);
    }
}

/* A super-block unpacked once for every token of a prompt: what avx512_ktile computes from it. */
typedef struct {
    __m512i wq[4], scale[4]; /* avx512_kvalues, j = 0 .. 3 */
    __m256i mins16;
    float d, dmin;
} kquant_unpacked;

AVX512_INLINE void avx512_kunpack(const int type, const uint8_t *blk, kquant_unpacked *u) {
    __m512i scales;
    avx512_kscales(type, blk, &u->d, &u->dmin, &u->mins16, &scales);
    for (int j = 0; j < 4; j++) avx512_kvalues(type, blk, j, scales, &u->wq[j], &u->scale[j]);
}

/* One super-block's sums into a row's 8 float lanes: the 16 integer lanes folded to 8 (lanes k and
 * k + 8 hold values 4k + 32m + 0..3, however the 64-value steps were laid out), times d * xd, and the
 * min or 32 term (m: 8 lanes) times mf. */
AVX512_INLINE void avx512_kadd(__m512i isum, float dx, __m256i m, float mf, __m256 *acc, __m256 *accm) {
    const __m256i folded = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(dx), _mm256_cvtepi32_ps(folded), *acc);
    *accm = _mm256_fmadd_ps(_mm256_set1_ps(mf), _mm256_cvtepi32_ps(m), *accm);
}

/* R x C tile over K-quant weights against block_q8k activations, 64 values (two Q4_K/Q5_K
 * sub-blocks, four Q6_K ones) per 512-bit step: as avx2_q5k_tile, with each step's byte products
 * summed in pairs (maddubs) and multiplied by their sub-block's scale and added in one vpdpwssd
 * (VNNI). The weights come from the rows w, w + rb, ..., or, if pre is not NULL, from their
 * super-blocks unpacked there (row r's at pre + r * nb): the same vectors either way. */
AVX512_INLINE void avx512_ktile(const int type, const int R, const int C, const uint8_t *w, size_t rb,
                                const kquant_unpacked *pre, const block_q8k *xk, int nb, float *y,
                                int y_stride, int accumulate) {
    const size_t bsize = type == PYLLM_TYPE_Q4_K ? sizeof(block_q4_K)
                       : type == PYLLM_TYPE_Q5_K ? sizeof(block_q5_K) : sizeof(block_q6_K);
    __m256 acc[4][4], accm[4][4]; /* the scaled sums and the min (Q4_K, Q5_K) or 32 (Q6_K) terms */
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = accm[r][c] = _mm256_setzero_ps();

    for (int b = 0; b < nb; b++) {
        __m512i isum[4][4];
        float wd[4], wmin[4];
        __m256i mins16[4];
        __m512i scales[4];
        for (int r = 0; r < R; r++) {
            for (int c = 0; c < C; c++) isum[r][c] = _mm512_setzero_si512();
            if (pre) {
                const kquant_unpacked *u = pre + (size_t)r * nb + b;
                wd[r] = u->d;
                wmin[r] = u->dmin;
                mins16[r] = u->mins16;
                continue;
            }
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * bsize;
            if (C == 1) {
                PREFETCH_AHEAD(blk, PREFETCH_BYTES);
                PREFETCH_AHEAD(blk + 64, PREFETCH_BYTES);
                PREFETCH_AHEAD(blk + 128, PREFETCH_BYTES);
            }
            avx512_kscales(type, blk, &wd[r], &wmin[r], &mins16[r], &scales[r]);
        }
        for (int j = 0; j < 4; j++) { /* values 64j .. 64j + 63 */
            __m512i wq[4], scale[4];
            for (int r = 0; r < R; r++) {
                if (pre) {
                    const kquant_unpacked *u = pre + (size_t)r * nb + b;
                    wq[r] = u->wq[j];
                    scale[r] = u->scale[j];
                } else {
                    avx512_kvalues(type, w + (size_t)r * rb + (size_t)b * bsize, j, scales[r], &wq[r], &scale[r]);
                }
            }
            for (int c = 0; c < C; c++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(xk[(size_t)c * nb + b].qs + 64 * j));
                for (int r = 0; r < R; r++)
                    isum[r][c] = _mm512_dpwssd_epi32(isum[r][c], _mm512_maddubs_epi16(wq[r], xv), scale[r]);
            }
        }
        for (int c = 0; c < C; c++) {
            const block_q8k *xb = xk + (size_t)c * nb + b;
            const __m256i bsums = _mm256_loadu_si256((const __m256i *)xb->bsums);
            for (int r = 0; r < R; r++) {
                const float mf = type == PYLLM_TYPE_Q6_K ? -32.0f * wd[r] * xb->d : -wmin[r] * xb->d;
                avx512_kadd(isum[r][c], wd[r] * xb->d, _mm256_madd_epi16(mins16[r], bsums), mf, &acc[r][c], &accm[r][c]);
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) {
            float v = avx2_hsum(_mm256_add_ps(acc[r][c], accm[r][c]));
            float *dst = y + (size_t)c * y_stride + r;
            *dst = accumulate ? *dst + v : v;
        }
}

/* Q4_K, AVX-512. Every path computes one row times one token in the same steps: per super-block
 * b, two exact integers,
 *   T_b = sum over sub-blocks s of scale_s * (q_s . x_s)   and   M_b = sum over s of min_s * sum(x_s),
 * then, into one of four float sums A_j, j = b % 4, each from 0 and in block order:
 * A_j = fma(d_b xd_b, T_b, A_j); A_j = fma(-dmin_b xd_b, M_b, A_j) (xd_b: the activation block's
 * scale); the result is (A_0 + A_2) + (A_1 + A_3). Tokens therefore decode bit for bit as they
 * would inside a prompt, whichever path each takes.
 *   Prompts (avx512_q4k_lanes) put 16 weight rows in the 16 lanes: each super-block of the 16 rows
 * is unpacked once per matmul into 64 registers of 4-byte groups (lane r: row r's values
 * 4k .. 4k + 3), and each vpdpbusd multiplies one of them by 4 activation bytes broadcast from
 * memory: 64 useful products per instruction, against 32 for the maddubs + vpdpwssd pair of a
 * row-at-a-time tile, and a sub-block's dot product comes out whole in each lane, to be scaled by
 * one vpmulld. Against the 2x4 tiles this replaced: 2.3x (2048 columns) and 2.7x (8192) on one
 * thread, 64 tokens; pp512 at Llama-3.2-1B shapes 1.70x, decoding unchanged (docs/performance.md).
 *   Single tokens, and batches under Q4K_LANES_MIN (avx512_q4k_row), read a row front to back: each 64 bytes of quants hold two pairs
 * of sub-blocks (low nibbles: 32-value sub-blocks 4i and 4i + 2, high: 4i + 1 and 4i + 3), read in
 * one load and unpacked in three steps, against the token's values put in that order once per
 * matmul (avx512_q4k_order: QK_K bytes per super-block, and the blocks' scales xd_b); the scaled products are summed in 16
 * integer lanes, and four blocks' T_b and M_b taken out of those lanes together, so that the four
 * sums take them in one multiply-add each. */
AVX512_INLINE void avx512_q4k_order(const block_q8k *xk, int nb, int8_t *xq, float *xd) {
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < 2; h++) { /* each 128 values: sub-blocks 0, 2, 1, 3 */
            const int8_t *src = xk[b].qs + 128 * h;
            int8_t *dst = xq + (size_t)b * QK_K + 128 * h;
            for (int k = 0; k < 4; k++)
                _mm256_storeu_si256((__m256i *)(dst + 32 * k),
                                    _mm256_loadu_si256((const __m256i *)(src + 32 * ((k & 1) * 2 + (k >> 1)))));
        }
    for (int b = 0; b < nb + 4; b++) xd[b] = b < nb ? xk[b].d : 0.0f; /* the scales, 0 past the last */
}

/* Decoding streams a K-quant row: ask for a super-block's three cache lines PREFETCH_BYTES ahead. */
AVX512_INLINE void avx512_k_prefetch(const uint8_t *blk) {
    PREFETCH_AHEAD(blk, PREFETCH_BYTES);
    PREFETCH_AHEAD(blk + 64, PREFETCH_BYTES);
    PREFETCH_AHEAD(blk + 128, PREFETCH_BYTES); /* the next block's first line is blk + 192's at most */
}

/* A block's sums as avx512_k_add4 takes them: isum's 16 lanes folded to the 8 whose sum is T_b,
 * then the 8 whose sum is M_b (m16 times the activations' sums of 16). */
AVX512_INLINE __m512i avx512_k_tm(__m512i isum, __m256i m16, const block_q8k *xb) {
    const __m256i t8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
    const __m256i m8 = _mm256_madd_epi16(m16, _mm256_loadu_si256((const __m256i *)xb->bsums));
    return _mm512_inserti64x4(_mm512_castsi256_si512(t8), m8, 1);
}

/* Block b of a Q4_K row against one token (x: its values in avx512_q4k_order's order): 8 int32
 * lanes whose sum is T_b, then 8 whose sum is M_b. */
AVX512_INLINE __m512i avx512_q4k_block(const block_q4_K *q, const block_q8k *xb, const int8_t *x) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* which of the 8 scales goes over each int16 pair sum: sub-blocks 0 and 2 (lanes 0-15, 16-31)
     * for the first 64 bytes' low nibbles, 1 and 3 for their high ones, 4 and 6, 5 and 7 */
    const __m512i pick0 = _mm512_slli_epi16(_mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                                                               15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 4), 1);
    const __m512i pick[4] = {pick0, _mm512_add_epi16(pick0, _mm512_set1_epi16(1)),
                             _mm512_add_epi16(pick0, _mm512_set1_epi16(4)), _mm512_add_epi16(pick0, _mm512_set1_epi16(5))};
    const uint8_t *blk = (const uint8_t *)q;
    avx512_k_prefetch(blk);
    float d, dmin;
    __m256i mins16;
    __m512i scales;
    avx512_kscales(PYLLM_TYPE_Q4_K, blk, &d, &dmin, &mins16, &scales);
    __m512i isum = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
        const __m512i v = _mm512_loadu_si512((const void *)(q->qs + 64 * h));
        const __m512i nibbles[2] = {_mm512_and_si512(v, m4), _mm512_and_si512(_mm512_srli_epi16(v, 4), m4)};
        for (int j = 0; j < 2; j++)
            isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(nibbles[j], _mm512_loadu_si512((const void *)(x + 128 * h + 64 * j))),
                                       _mm512_permutexvar_epi16(pick[2 * h + j], scales));
    }
    return avx512_k_tm(isum, mins16, xb);
}

/* Four blocks' T and M (block k in lane k) from their 8 + 8 lanes s[0 .. 3], as avx512_q4k_block
 * and avx512_q6k_block give them, added into the four sums in acc: block k into sum k (only the
 * blocks in `in`), T times dx, then M times mx. */
AVX512_INLINE __m128 avx512_k_add4(const __m512i *s, __m128 dx, __m128 mx, __mmask8 in, __m128 acc) {
    /* 128-bit lane q of w: the sums of lane q's four int32 in s[0 .. 3] */
    const __m512i w01 = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
    const __m512i w23 = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
    const __m512i w = _mm512_add_epi32(_mm512_unpacklo_epi64(w01, w23), _mm512_unpackhi_epi64(w01, w23));
    const __m128i t = _mm_add_epi32(_mm512_castsi512_si128(w), _mm512_extracti32x4_epi32(w, 1));
    const __m128i m = _mm_add_epi32(_mm512_extracti32x4_epi32(w, 2), _mm512_extracti32x4_epi32(w, 3));
    acc = _mm_mask3_fmadd_ps(dx, _mm_cvtepi32_ps(t), acc, in);
    return _mm_mask3_fmadd_ps(mx, _mm_cvtepi32_ps(m), acc, in);
}

/* avx512_k_add4 for Q4_K blocks, from their f16 d, dmin pairs (dm) and activation scales xd. */
AVX512_INLINE __m128 avx512_q4k_add4(const __m512i *s, __m128i dm, const float *xd, __mmask8 in, __m128 acc) {
    /* d0 d1 d2 d3 dmin0 .. dmin3 */
    const __m256 dd = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(dm), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    const __m128 x4 = _mm_loadu_ps(xd);
    const __m128 dx = _mm_mul_ps(_mm256_castps256_ps128(dd), x4);
    const __m128 mx = _mm_mul_ps(_mm_xor_ps(_mm256_extractf128_ps(dd, 1), _mm_set1_ps(-0.0f)), x4);
    return avx512_k_add4(s, dx, mx, in, acc);
}

AVX512_INLINE int32_t avx512_q4k_dm(const block_q4_K *q) {
    int32_t v;
    memcpy(&v, q, sizeof v); /* d, dmin */
    return v;
}

/* Blocks b0 .. b1 - 1 (b0 a multiple of 4) of a Q4_K row against one token (xq: avx512_q4k_order's
 * bytes of those blocks, from block b0; xd: their scales, from block b0, then 0 up to a multiple of
 * 4 blocks), added into the four sums in acc. */
AVX512_INLINE __m128 avx512_q4k_row(const block_q4_K *q, const block_q8k *xk, const int8_t *xq, const float *xd,
                                    int b0, int b1, __m128 acc) {
    int g = b0;
    for (; g + 4 <= b1; g += 4) {
        const int8_t *x = xq + (size_t)(g - b0) * QK_K;
        const __m512i s[4] = {avx512_q4k_block(q + g, xk + g, x), avx512_q4k_block(q + g + 1, xk + g + 1, x + QK_K),
                              avx512_q4k_block(q + g + 2, xk + g + 2, x + 2 * QK_K),
                              avx512_q4k_block(q + g + 3, xk + g + 3, x + 3 * QK_K)};
        const __m128i dm = _mm_setr_epi32(avx512_q4k_dm(q + g), avx512_q4k_dm(q + g + 1), avx512_q4k_dm(q + g + 2),
                                          avx512_q4k_dm(q + g + 3));
        acc = avx512_q4k_add4(s, dm, xd + (g - b0), 0xF, acc);
    }
    if (g < b1) { /* the last 1 to 3 blocks; the sums of the absent ones stay as they are */
        const int left = b1 - g;
        const int8_t *x = xq + (size_t)(g - b0) * QK_K;
        const __m512i zero = _mm512_setzero_si512();
        const __m512i s[4] = {avx512_q4k_block(q + g, xk + g, x),
                              left > 1 ? avx512_q4k_block(q + g + 1, xk + g + 1, x + QK_K) : zero,
                              left > 2 ? avx512_q4k_block(q + g + 2, xk + g + 2, x + 2 * QK_K) : zero, zero};
        const __m128i dm = _mm_setr_epi32(avx512_q4k_dm(q + g), left > 1 ? avx512_q4k_dm(q + g + 1) : 0,
                                          left > 2 ? avx512_q4k_dm(q + g + 2) : 0, 0);
        acc = avx512_q4k_add4(s, dm, xd + (g - b0), (__mmask8)((1u << left) - 1), acc);
    }
    return acc;
}

/* The four sums of avx512_q4k_row as the result: (A_0 + A_2) + (A_1 + A_3). */
AVX512_INLINE float avx512_q4k_result(__m128 acc) {
    const __m128 half = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

/* Q6_K, AVX-512, computes a row times a token as Q4_K does (above), with T_b = sum over its 16
 * sub-blocks of scale_s * (q_s . x_s), q 0..63, M_b = sum over s of scale_s * sum(x_s), and
 * -32 d_b in place of -dmin_b: the value is d scale (q - 32). */

/* Block b of a Q6_K row (blk) against one token: 8 int32 lanes whose sum is T_b, then 8 whose sum
 * is M_b. */
AVX512_INLINE __m512i avx512_q6k_block(const uint8_t *blk, const block_q8k *xb) {
    avx512_k_prefetch(blk);
    float d, dmin;
    __m256i scales16;
    __m512i scales;
    avx512_kscales(PYLLM_TYPE_Q6_K, blk, &d, &dmin, &scales16, &scales);
    __m512i isum = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m512i wq, scale;
        avx512_kvalues(PYLLM_TYPE_Q6_K, blk, j, scales, &wq, &scale);
        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(wq, _mm512_loadu_si512((const void *)(xb->qs + 64 * j))), scale);
    }
    return avx512_k_tm(isum, scales16, xb);
}

AVX512_INLINE short avx512_q6k_d(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk + offsetof(block_q6_K, d), sizeof h);
    return (short)h;
}

/* avx512_k_add4 for the Q6_K blocks from blk (`left` of them real, at most 4) against the
 * activation blocks xk. */
AVX512_INLINE __m128 avx512_q6k_add4(const uint8_t *blk, const block_q8k *xk, const int left, __m128 acc) {
    const size_t bs = sizeof(block_q6_K);
    const __m512i zero = _mm512_setzero_si512();
    const __m512i s[4] = {avx512_q6k_block(blk, xk), left > 1 ? avx512_q6k_block(blk + bs, xk + 1) : zero,
                          left > 2 ? avx512_q6k_block(blk + 2 * bs, xk + 2) : zero,
                          left > 3 ? avx512_q6k_block(blk + 3 * bs, xk + 3) : zero};
    const __m128 d4 = _mm_cvtph_ps(_mm_setr_epi16(avx512_q6k_d(blk), left > 1 ? avx512_q6k_d(blk + bs) : 0,
                                                  left > 2 ? avx512_q6k_d(blk + 2 * bs) : 0,
                                                  left > 3 ? avx512_q6k_d(blk + 3 * bs) : 0, 0, 0, 0, 0));
    const __m128 x4 = _mm_setr_ps(xk[0].d, left > 1 ? xk[1].d : 0.0f, left > 2 ? xk[2].d : 0.0f, left > 3 ? xk[3].d : 0.0f);
    const __m128 dx = _mm_mul_ps(d4, x4);
    const __m128 mx = _mm_mul_ps(_mm_mul_ps(d4, _mm_set1_ps(-32.0f)), x4);
    return avx512_k_add4(s, dx, mx, (__mmask8)((1u << left) - 1), acc);
}

/* One Q6_K row times one token. */
AVX512_INLINE float avx512_q6k_row(const uint8_t *row, const block_q8k *xk, int nb) {
    __m128 acc = _mm_setzero_ps();
    int g = 0;
    for (; g + 4 <= nb; g += 4) acc = avx512_q6k_add4(row + (size_t)g * sizeof(block_q6_K), xk + g, 4, acc);
    if (g < nb) acc = avx512_q6k_add4(row + (size_t)g * sizeof(block_q6_K), xk + g, nb - g, acc);
    return avx512_q4k_result(acc);
}

/* One super-block of 16 Q4_K or Q6_K rows as avx512_klanes reads it: wq[G], lane r: row r's values
 * 4G .. 4G + 3 as bytes (G = S g + ... : sub-block G / (64 / S), S = 8 sub-blocks for Q4_K, 16 for
 * Q6_K); scale[s], lane r: row r's scale of sub-block s; pair2[p], lane r: the int16 pair that
 * multiplies bsums 2p and 2p + 1 for M (Q4_K: min p twice; Q6_K: scales 2p and 2p + 1); d, and
 * m (-dmin, or -32 d), as floats. */
typedef struct {
    __m512i wq[64], scale[16], pair2[8];
    __m512 d, m;
} klanes16;

/* Rows r .. r + nr - 1 (nr <= 16; the other lanes zero) of a Q4_K or Q6_K matrix, super-block by
 * super-block (u[b]): each row's values in element order (avx512_kvalues), then a transpose of
 * 4-byte groups. */
AVX512_INLINE void avx512_klanes_unpack16(const int type, const uint8_t *w, size_t rb, int nr, int nb, klanes16 *u) {
    const size_t bsize = rb / (size_t)nb;
    const int S = type == PYLLM_TYPE_Q6_K ? 16 : 8;
    for (int b = 0; b < nb; b++) {
        _Alignas(64) uint8_t vals[16][QK_K];
        _Alignas(64) int32_t scale[16][16], pair2[8][16];
        _Alignas(64) float d[16], m[16];
        for (int r = 0; r < 16; r++) {
            const uint8_t *blk = r < nr ? w + (size_t)r * rb + (size_t)b * bsize : NULL;
            kquant_lane_scales(type, blk, r, 16, scale[0], pair2[0], d, m);
            if (!blk) {
                memset(vals[r], 0, QK_K);
                continue;
            }
            float bd, dmin;
            __m256i mins16;
            __m512i scales;
            avx512_kscales(type, blk, &bd, &dmin, &mins16, &scales);
            for (int j = 0; j < 4; j++) {
                __m512i wq, unused;
                avx512_kvalues(type, blk, j, scales, &wq, &unused);
                _mm512_store_si512((void *)(vals[r] + 64 * j), wq);
            }
        }
        klanes16 *o = u + b;
        for (int c = 0; c < QK_K / 16; c++) { /* 16 bytes (4 groups) of every row at a time */
            __m512i z[4], out[4];
            for (int j = 0; j < 4; j++) z[j] = avx512_rows4(vals[4 * j] + 16 * c, QK_K, 4);
            avx512_transpose16x4(z, out);
            for (int k = 0; k < 4; k++) o->wq[4 * c + k] = out[k];
        }
        for (int s = 0; s < S; s++) o->scale[s] = _mm512_load_si512((const void *)scale[s]);
        for (int p = 0; p < 8; p++) o->pair2[p] = _mm512_load_si512((const void *)pair2[p]);
        o->d = _mm512_load_ps(d);
        o->m = _mm512_load_ps(m);
    }
}

/* TT tokens (xk: the first one's blocks, nb per token) times the 16 rows unpacked in u, into
 * y[t * y_stride + r] for the first nr rows. */
AVX512_INLINE void avx512_klanes(const int type, const int TT, const klanes16 *u, int nb, const block_q8k *xk,
                                 int nr, float *y, int y_stride, int accumulate) {
    const int S = type == PYLLM_TYPE_Q6_K ? 16 : 8, G = 64 / S; /* sub-blocks, 4-value groups in each */
    __m512 acc[4][4]; /* token i, sum j */
    for (int i = 0; i < TT; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const klanes16 *o = u + b;
        __m512i T[4], D[4];
        for (int i = 0; i < TT; i++) T[i] = _mm512_setzero_si512();
        for (int s = 0; s < S; s++) {
            for (int i = 0; i < TT; i++) D[i] = _mm512_setzero_si512();
            for (int g = 0; g < G; g++) {
                const __m512i wv = o->wq[s * G + g];
                for (int i = 0; i < TT; i++) {
                    int32_t xv;
                    memcpy(&xv, xk[(size_t)i * nb + b].qs + 4 * (s * G + g), sizeof xv);
                    D[i] = _mm512_dpbusd_epi32(D[i], wv, _mm512_set1_epi32(xv));
                }
            }
            for (int i = 0; i < TT; i++) T[i] = _mm512_add_epi32(T[i], _mm512_mullo_epi32(D[i], o->scale[s]));
        }
        for (int i = 0; i < TT; i++) {
            const block_q8k *xb = xk + (size_t)i * nb + b;
            __m512i M = _mm512_setzero_si512();
            for (int p = 0; p < 8; p++) {
                int32_t pair;
                memcpy(&pair, xb->bsums + 2 * p, sizeof pair);
                M = _mm512_dpwssd_epi32(M, o->pair2[p], _mm512_set1_epi32(pair));
            }
            const __m512 xd = _mm512_set1_ps(xb->d);
            __m512 *a = &acc[i][b % 4];
            *a = _mm512_fmadd_ps(_mm512_mul_ps(o->d, xd), _mm512_cvtepi32_ps(T[i]), *a);
            *a = _mm512_fmadd_ps(_mm512_mul_ps(o->m, xd), _mm512_cvtepi32_ps(M), *a);
        }
    }
    const __mmask16 real = (__mmask16)((1u << nr) - 1);
    for (int i = 0; i < TT; i++) {
        float *dst = y + (size_t)i * y_stride;
        __m512 v = _mm512_add_ps(_mm512_add_ps(acc[i][0], acc[i][2]), _mm512_add_ps(acc[i][1], acc[i][3]));
        if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(real, dst), v);
        _mm512_mask_storeu_ps(dst, real, v);
    }
}

/* A batch through the lanes; 0 where their memory could not be had (nothing written then). */
AVX512_INLINE int avx512_matmul_klanes(const int type, const pyllm_tensor *w, int r0, int r1, const block_q8k *xk,
                                       int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    const int nb = w->cols / QK_K;
    klanes16 *u = aligned_alloc(64, (size_t)nb * sizeof(klanes16));
    if (!u) return 0;
    for (int c0 = r0; c0 < r1; c0 += 16) {
        const int nr = r1 - c0 < 16 ? r1 - c0 : 16;
        avx512_klanes_unpack16(type, (const uint8_t *)w->data + (size_t)c0 * rb, rb, nr, nb, u);
        int t = 0;
        for (; t + 4 <= n; t += 4)
            avx512_klanes(type, 4, u, nb, xk + (size_t)t * nb, nr, y + (size_t)t * w->rows + c0, w->rows, accumulate);
        for (; t < n; t++)
            avx512_klanes(type, 1, u, nb, xk + (size_t)t * nb, nr, y + (size_t)t * w->rows + c0, w->rows, accumulate);
    }
    free(u);
    return 1;
}

/* Batches of this many tokens and more take the 16-row lanes; fewer, the row at a time. */
#define Q4K_LANES_MIN 4
/* Rows of up to this many super-blocks (65,536 values: every feed-forward width of today's models)
 * keep the whole reordered token on the stack (65 KB); longer ones reorder it a piece per row. */
#define Q4K_ORDER_BLOCKS 256

AVX512_INLINE void avx512_matmul_q4k(const pyllm_tensor *w, int r0, int r1, const block_q8k *xk, int n,
                                     float *y, int accumulate) {
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q4_K, w->cols);
    const int nb = w->cols / QK_K;
    const uint8_t *data = w->data;
    if (n >= Q4K_LANES_MIN && avx512_matmul_klanes(PYLLM_TYPE_Q4_K, w, r0, r1, xk, n, y, accumulate)) return;
    /* a token at a time (also where the lanes' memory could not be had: the same result) */
    int8_t xq[Q4K_ORDER_BLOCKS * QK_K];
    float xd[Q4K_ORDER_BLOCKS + 4];
    for (int t = 0; t < n; t++) {
        const block_q8k *xt = xk + (size_t)t * nb;
        float *yt = y + (size_t)t * w->rows;
        if (nb <= Q4K_ORDER_BLOCKS) {
            avx512_q4k_order(xt, nb, xq, xd);
            for (int r = r0; r < r1; r++) {
                const float v = avx512_q4k_result(avx512_q4k_row((const block_q4_K *)(data + (size_t)r * rb), xt, xq, xd, 0, nb, _mm_setzero_ps()));
                yt[r] = accumulate ? yt[r] + v : v;
            }
            continue;
        }
        /* longer rows (over 65,536 values): the token reordered Q4K_ORDER_BLOCKS blocks at a time,
         * for each row in turn */
        for (int r = r0; r < r1; r++) {
            __m128 acc = _mm_setzero_ps();
            for (int b0 = 0; b0 < nb; b0 += Q4K_ORDER_BLOCKS) {
                const int b1 = b0 + Q4K_ORDER_BLOCKS < nb ? b0 + Q4K_ORDER_BLOCKS : nb;
                avx512_q4k_order(xt + b0, b1 - b0, xq, xd);
                acc = avx512_q4k_row((const block_q4_K *)(data + (size_t)r * rb), xt, xq, xd, b0, b1, acc);
            }
            const float v = avx512_q4k_result(acc);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

AVX512_INLINE void avx512_matmul_q6k(const pyllm_tensor *w, int r0, int r1, const block_q8k *xk, int n,
                                     float *y, int accumulate) {
    if (n >= Q4K_LANES_MIN && avx512_matmul_klanes(PYLLM_TYPE_Q6_K, w, r0, r1, xk, n, y, accumulate)) return;
    /* a token at a time (also where the lanes' memory could not be had: the same result) */
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q6_K, w->cols);
    const int nb = w->cols / QK_K;
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const float v = avx512_q6k_row((const uint8_t *)w->data + (size_t)r * rb, xk + (size_t)t * nb, nb);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

/* Rows of a prompt's tiles unpacked at a time (avx512_matmul_k): their super-blocks stay in L2
 * while every token passes over them. */
#define KTILE_CHUNK_AVX512 16

/* Q5_K: 2x4 tiles for prompts, one row at a time for single tokens (the same tile, 1x1). */
AVX512_INLINE void avx512_matmul_k(const int type, const pyllm_tensor *w, int r0, int r1,
                                   const block_q8k *xk, int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    const int nb = w->cols / QK_K, TR = KTILE_ROWS_AVX512, TC = KTILE_COLS_AVX512;
    const uint8_t *data = w->data;
    if (n == 1) {
        for (int r = r0; r < r1; r++)
            avx512_ktile(type, 1, 1, data + (size_t)r * rb, rb, NULL, xk, nb, y + r, w->rows, accumulate);
        return;
    }
    /* a prompt: each chunk of rows unpacked once for all tokens (or, without the memory for it, in
     * every tile: the same result) */
    const int chunk = KTILE_CHUNK_AVX512;
    const size_t bsize = rb / (size_t)nb;
    kquant_unpacked *pre = aligned_alloc(64, (size_t)chunk * nb * sizeof(kquant_unpacked));
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        if (pre)
            for (int r = c0; r < c1; r++)
                for (int b = 0; b < nb; b++)
                    avx512_kunpack(type, data + (size_t)r * rb + (size_t)b * bsize, pre + (size_t)(r - c0) * nb + b);
#define KTILE_AT(R_, C_) avx512_ktile(type, R_, C_, data + (size_t)r * rb, rb, pre ? pre + (size_t)(r - c0) * nb : NULL, \
                                      xk + (size_t)t * nb, nb, y + (size_t)t * w->rows + r, w->rows, accumulate)
        int t = 0;
        for (; t + TC <= n; t += TC) {
            int r = c0;
            for (; r + TR <= c1; r += TR) KTILE_AT(TR, TC);
            for (; r < c1; r++) KTILE_AT(1, TC);
        }
        for (; t < n; t++)
            for (int r = c0; r < c1; r++) KTILE_AT(1, 1);
#undef KTILE_AT
    }
    free(pre);
}

/* R x C tile over F32 or F16 weights, 16 values per step; the tail of a row (cols % 16) is scalar. */
AVX512_INLINE void avx512_ftile(const int type, const int R, const int C, const uint8_t *w, size_t rb,
                                const float *x, int cols, float *y, int y_stride, int accumulate) {
    __m512 acc[4][6];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        __m512 wv[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + (size_t)r * rb;
            if (C == 1 && (type == PYLLM_TYPE_F32 || i % 32 == 0)) /* a line holds 16 F32 or 32 F16 */
                PREFETCH_AHEAD(row + i * (type == PYLLM_TYPE_F32 ? 4 : 2), PREFETCH_BYTES);
            wv[r] = type == PYLLM_TYPE_F32
                ? _mm512_loadu_ps((const float *)row + i)
                : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i)));
        }
        for (int c = 0; c < C; c++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)c * cols + i);
            for (int r = 0; r < R; r++) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + (size_t)r * rb;
            float v = avx512_sum16(acc[r][c]);
            for (int j = i; j < cols; j++) {
                float wj = type == PYLLM_TYPE_F32 ? ((const float *)row)[j]
                                                  : _cvtsh_ss(((const uint16_t *)row)[j]);
                v += wj * x[(size_t)c * cols + j];
            }
            float *dst = y + (size_t)c * y_stride + r;
            *dst = accumulate ? *dst + v : v;
        }
}

AVX512_INLINE void avx512_ftile_at(const int type, const int R, const int C, const pyllm_tensor *w,
                                   size_t rb, int r, const float *x, int t, float *y, int accumulate) {
    avx512_ftile(type, R, C, (const uint8_t *)w->data + (size_t)r * rb, rb, x + (size_t)t * w->cols,
                 w->cols, y + (size_t)t * w->rows + r, w->rows, accumulate);
}

/* Float weights: 4x6 tiles for prompts (24 of the 32 vector registers hold accumulators), rows in
 * cache-sized chunks; one row at a time for decoding. */
AVX512_INLINE void avx512_matmul_float(const int type, const pyllm_tensor *w, int r0, int r1,
                                       const float *x, int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    const int chunk = n == 1 ? r1 - r0 : 32;
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        int t = 0;
        for (; t + 6 <= n; t += 6) {
            int r = c0;
            for (; r + 4 <= c1; r += 4) avx512_ftile_at(type, 4, 6, w, rb, r, x, t, y, accumulate);
            for (; r < c1; r++) avx512_ftile_at(type, 1, 6, w, rb, r, x, t, y, accumulate);
        }
        for (; t < n; t++)
            for (int r = c0; r < c1; r++) avx512_ftile_at(type, 1, 1, w, rb, r, x, t, y, accumulate);
    }
}

/* Attention with 16-wide vectors for head sizes that are multiples of 32 up to 256 (others go
 * through the AVX2 code; 64, 128 and 256 are instantiated with constant sizes), up to four
 * (KERN_ATTEND_HEADS) query heads that share a key/value head at once: each cached key and value
 * is loaded once for all of them, so a prompt reads the cache from L2 a quarter as often. Scores
 * as in avx2_dot8, each 512-bit accumulator folded to 256 bits before the horizontal adds. */
AVX512_INLINE __m256 avx512_reduce8(const __m512 *acc) {
    __m256 half[8];
    for (int r = 0; r < 8; r++)
        half[r] = _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1)));
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(half[4], half[5]), _mm256_hadd_ps(half[6], half[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* avx512_reduce8 for 4 keys: each key's sum by the same tree of additions. */
AVX512_INLINE __m128 avx512_reduce4(const __m512 *acc) {
    __m256 half[4];
    for (int r = 0; r < 4; r++)
        half[r] = _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1)));
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(half[0], half[1]), _mm256_hadd_ps(half[2], half[3]));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* s[g] = scores of query head g (G <= 4, H floats apart in q) against K (8 or 4) consecutive keys
 * from k, per key the same additions whatever G and K are. */
AVX512_INLINE void avx512_dot_keys(const int G, const int K, const int H, const float *q, const float *k,
                                   int kv_stride, __m512 acc[][8]) {
    for (int g = 0; g < G; g++)
        for (int r = 0; r < K; r++) acc[g][r] = _mm512_setzero_ps();
    for (int i = 0; i < H; i += 16) {
        __m512 qv[4];
        for (int g = 0; g < G; g++) qv[g] = _mm512_loadu_ps(q + g * H + i);
        for (int r = 0; r < K; r++) {
            const __m512 kv = _mm512_loadu_ps(k + (size_t)r * kv_stride + i);
            for (int g = 0; g < G; g++) acc[g][r] = _mm512_fmadd_ps(qv[g], kv, acc[g][r]);
        }
    }
}

/* Scores of 8 keys for G heads: 8 at once for up to three heads, two steps of 4 for four (whose
 * 32 accumulators would not fit the registers). */
AVX512_INLINE void avx512_dot8(const int G, const int H, const float *q, const float *k, int kv_stride,
                               __m256 *s) {
    __m512 acc[4][8];
    if (G <= 3) {
        avx512_dot_keys(G, 8, H, q, k, kv_stride, acc);
        for (int g = 0; g < G; g++) s[g] = avx512_reduce8(acc[g]);
        return;
    }
    __m128 lo[4];
    avx512_dot_keys(G, 4, H, q, k, kv_stride, acc);
    for (int g = 0; g < G; g++) lo[g] = avx512_reduce4(acc[g]);
    avx512_dot_keys(G, 4, H, q, k + (size_t)4 * kv_stride, kv_stride, acc);
    for (int g = 0; g < G; g++) s[g] = _mm256_set_m128(avx512_reduce4(acc[g]), lo[g]);
}

/* out_g = sum_j p_g[j] v_j over W columns from `col`, over the runs' positions (p_g n_pos floats
 * apart, out_g `ostride` apart; G * W <= 192). Even and odd positions (counted over all the runs,
 * so that how the cache is cut into runs changes nothing) go to separate accumulators, so that one
 * head's multiply-adds do not wait on the previous key's; every head is summed in the same order
 * whatever G and the column chunk are, so a token's output does not depend on whether it came in a
 * prompt (heads grouped) or alone. */
AVX512_INLINE void avx512_weighted_sum(const int G, const int W, const float *p, const kern_kv_run *runs,
                                       int n_runs, int kv_stride, int n_pos, int col, float *out, int ostride) {
    __m512 even[4][8], odd[4][8];
    for (int g = 0; g < G; g++)
        for (int i = 0; i < W / 16; i++) even[g][i] = odd[g][i] = _mm512_setzero_ps();
    int at = 0; /* the run's first position */
    for (int r = 0; r < n_runs; at += runs[r].n, r++) {
        const float *v = runs[r].v + col;
        const int n = runs[r].n;
        int j = 0;
        if (at % 2 && n > 0) { /* position `at` is odd: its accumulators are the odd ones, wherever runs start */
            for (int i = 0; i < W / 16; i++) {
                const __m512 b = _mm512_loadu_ps(v + 16 * i);
                for (int g = 0; g < G; g++)
                    odd[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)g * n_pos + at]), b, odd[g][i]);
            }
            j = 1;
        }
        for (; j + 2 <= n; j += 2) {
            const float *v0 = v + (size_t)j * kv_stride, *v1 = v0 + kv_stride;
            for (int i = 0; i < W / 16; i++) {
                const __m512 a = _mm512_loadu_ps(v0 + 16 * i), b = _mm512_loadu_ps(v1 + 16 * i);
                for (int g = 0; g < G; g++) {
                    const float *pg = p + (size_t)g * n_pos + at + j;
                    even[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(pg[0]), a, even[g][i]);
                    odd[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(pg[1]), b, odd[g][i]);
                }
            }
        }
        if (j < n)
            for (int i = 0; i < W / 16; i++) {
                const __m512 a = _mm512_loadu_ps(v + (size_t)j * kv_stride + 16 * i);
                for (int g = 0; g < G; g++)
                    even[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)g * n_pos + at + j]), a, even[g][i]);
            }
    }
    for (int g = 0; g < G; g++)
        for (int i = 0; i < W / 16; i++)
            _mm512_storeu_ps(out + (size_t)g * ostride + 16 * i, _mm512_add_ps(even[g][i], odd[g][i]));
}

AVX512_INLINE void avx512_attend_heads(const int G, const int H, const float *q, const kern_kv_run *runs,
                                       int n_runs, int kv_stride, int n_pos, float scale,
                                       float *scores, float *out) {
    __m256 max8[4], s[4];
    float max[4], total[4];
    for (int g = 0; g < G; g++) { max8[g] = _mm256_set1_ps(-INFINITY); max[g] = -INFINITY; }
    int at = 0;
    for (int r = 0; r < n_runs; at += runs[r].n, r++) {
        const float *k = runs[r].k;
        int j = 0;
        for (; j + 8 <= runs[r].n; j += 8) {
            avx512_dot8(G, H, q, k + (size_t)j * kv_stride, kv_stride, s);
            for (int g = 0; g < G; g++) {
                s[g] = _mm256_mul_ps(_mm256_set1_ps(scale), s[g]);
                _mm256_storeu_ps(scores + (size_t)g * n_pos + at + j, s[g]);
                max8[g] = _mm256_max_ps(max8[g], s[g]);
            }
        }
        if (j < runs[r].n) { /* the run's last keys, padded to 8: the same arithmetic as the rest */
            float pad[8 * ATTEND_PAD_MAX_DIM], s8[8];
            const int left = attend_pad_keys(k + (size_t)j * kv_stride, runs[r].n - j, kv_stride, H, pad);
            avx512_dot8(G, H, q, pad, H, s);
            for (int g = 0; g < G; g++) {
                _mm256_storeu_ps(s8, _mm256_mul_ps(_mm256_set1_ps(scale), s[g]));
                float *sg = scores + (size_t)g * n_pos + at + j;
                for (int t = 0; t < left; t++) {
                    sg[t] = s8[t];
                    max[g] = sg[t] > max[g] ? sg[t] : max[g];
                }
            }
        }
    }
    for (int g = 0; g < G; g++) {
        const float m8 = avx2_hmax(max8[g]);
        max[g] = m8 > max[g] ? m8 : max[g];
        total[g] = avx2_softmax_numerators(scores + (size_t)g * n_pos, n_pos, max[g]);
    }
    /* the value sum in column chunks whose accumulators (two per 16 columns and head) fit the
     * registers with room to spare: 128 columns of one head, 64 of two or three, 32 of four */
    const int chunk = G == 1 ? 128 : G <= 3 ? 64 : 32;
    for (int col = 0; col < H; col += chunk) {
        const int w = H - col < chunk ? H - col : chunk;
        float *oc = out + col;
#define WSUM(G_, W_) avx512_weighted_sum(G_, W_, scores, runs, n_runs, kv_stride, n_pos, col, oc, H)
        if (G == 1) {
            switch (w) {
            case 128: WSUM(1, 128); break;
            case 96: WSUM(1, 96); break;
            case 64: WSUM(1, 64); break;
            default: WSUM(1, 32); break;
            }
        } else if (G == 2) {
            if (w == 64) WSUM(2, 64); else WSUM(2, 32);
        } else if (G == 3) {
            if (w == 64) WSUM(3, 64); else WSUM(3, 32);
        } else {
            WSUM(4, 32);
        }
#undef WSUM
    }
    for (int g = 0; g < G; g++) avx2_scale(out + g * H, H, 1.0f / total[g]);
}

AVX512_TARGET void kern_x86_attend_avx512(const float *q, int n_q, const kern_kv_run *runs, int n_runs,
                                          int kv_stride, int n_pos, int head_dim, float scale,
                                          float *scores, float *out) {
    for (int g = 0; g < n_q; g += KERN_ATTEND_HEADS) {
        const int G = n_q - g < KERN_ATTEND_HEADS ? n_q - g : KERN_ATTEND_HEADS;
        const float *qg = q + (size_t)g * head_dim;
        float *og = out + (size_t)g * head_dim;
#define ATTEND(G_, H_) avx512_attend_heads(G_, H_, qg, runs, n_runs, kv_stride, n_pos, scale, scores, og)
#define ATTEND_G(H_) switch (G) { case 4: ATTEND(4, H_); break; case 3: ATTEND(3, H_); break; \
                                  case 2: ATTEND(2, H_); break; default: ATTEND(1, H_); break; }
        if (head_dim == 64) { ATTEND_G(64) }
        else if (head_dim == 128) { ATTEND_G(128) }
        else if (head_dim == 256) { ATTEND_G(256) }
        else if (head_dim % 32 == 0 && head_dim <= 256) { ATTEND_G(head_dim) }
        else
            for (int h = 0; h < G; h++)
                kern_x86_attend_avx2(qg + (size_t)h * head_dim, runs, n_runs, kv_stride, n_pos, head_dim, scale,
                                     scores, og + (size_t)h * head_dim);
#undef ATTEND_G
#undef ATTEND
    }
}

/* The AVX-512 matmul of each weight type (the traits table in dispatch.c points at them). */
AVX512_TARGET void kern_x86_matmul_f32_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                              const void *xq, int n, float *y, int accumulate) {
    (void)xq;
    avx512_matmul_float(PYLLM_TYPE_F32, w, r0, r1, x, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_f16_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                              const void *xq, int n, float *y, int accumulate) {
    (void)xq;
    avx512_matmul_float(PYLLM_TYPE_F16, w, r0, r1, x, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q8_0_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_lanes(PYLLM_TYPE_Q8_0, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q4_0_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_lanes(PYLLM_TYPE_Q4_0, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q4_1_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_lanes(PYLLM_TYPE_Q4_1, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q5_0_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_lanes(PYLLM_TYPE_Q5_0, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q5_1_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_lanes(PYLLM_TYPE_Q5_1, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q4_k_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_q4k(w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q5_k_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_k(PYLLM_TYPE_Q5_K, w, r0, r1, xq, n, y, accumulate);
}

AVX512_TARGET void kern_x86_matmul_q6_k_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                               const void *xq, int n, float *y, int accumulate) {
    (void)x;
    avx512_matmul_q6k(w, r0, r1, xq, n, y, accumulate);
}

/* avx2_q8f_tile with 16-wide vectors: R x C tiles, the same operations per row and activation row
 * whatever R and C (a block is 2 vectors, d * (q_lo . x_lo + q_hi . x_hi)). */
AVX512_INLINE void avx512_q8f_tile(const int R, const int C, const uint8_t *w, size_t rb, const float *x,
                                   int cols, float *y, int y_stride, int accumulate) {
    __m512 acc[2][6];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    for (int b = 0; b < cols / QK8_0; b++) {
        __m512 d[2], lo[2], hi[2];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * sizeof(block_q8_0);
            if (C == 1) PREFETCH_AHEAD(blk, PREFETCH_BYTES);
            d[r] = _mm512_set1_ps(avx2_half(blk));
            lo[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
            hi[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
        }
        for (int c = 0; c < C; c++) {
            const float *xb = x + (size_t)c * cols + (size_t)b * QK8_0;
            const __m512 xlo = _mm512_loadu_ps(xb), xhi = _mm512_loadu_ps(xb + 16);
            for (int r = 0; r < R; r++)
                acc[r][c] = _mm512_fmadd_ps(d[r], _mm512_fmadd_ps(hi[r], xhi, _mm512_mul_ps(lo[r], xlo)), acc[r][c]);
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) {
            float v = avx512_sum16(acc[r][c]);
            float *dst = y + (size_t)c * y_stride + r;
            *dst = accumulate ? *dst + v : v;
        }
}

AVX512_INLINE void avx512_q8f_tile_at(const int R, const int C, const pyllm_tensor *w, size_t rb, int r,
                                      const float *x, int t, float *y, int accumulate) {
    avx512_q8f_tile(R, C, (const uint8_t *)w->data + (size_t)r * rb, rb, x + (size_t)t * w->cols, w->cols,
                    y + (size_t)t * w->rows + r, w->rows, accumulate);
}

/* One row at a time for decoding; 2x6 tiles for prompts (12 accumulators, 6 converted weight
 * vectors), rows in chunks that stay in cache. */
AVX512_TARGET void kern_x86_matmul_float_q8_0_avx512(const pyllm_tensor *w, int r0, int r1, const float *x,
                                                     const void *xq, int n, float *y, int accumulate) {
    (void)xq;
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q8_0, w->cols);
    const int chunk = n == 1 ? r1 - r0 : 32;
    for (int c0 = r0; c0 < r1; c0 += chunk) {
        int c1 = c0 + chunk < r1 ? c0 + chunk : r1, t = 0;
        for (; t + 6 <= n; t += 6) {
            int r = c0;
            for (; r + 2 <= c1; r += 2) avx512_q8f_tile_at(2, 6, w, rb, r, x, t, y, accumulate);
            for (; r < c1; r++) avx512_q8f_tile_at(1, 6, w, rb, r, x, t, y, accumulate);
        }
        for (; t < n; t++)
            for (int r = c0; r < c1; r++) avx512_q8f_tile_at(1, 1, w, rb, r, x, t, y, accumulate);
    }
}
#endif /* HAVE_X86_KERNELS */
