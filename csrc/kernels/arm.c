/* arm.c - the NEON kernels (aarch64, where NEON is always present): one row at a time, int8
 * products widened with vmull/vpadal.
 */
#include "arch.h"

#ifdef HAVE_ARM_KERNELS
#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* The 5th bits of a 5-bit block (qh: bit j for element j) as 0x10 or 0 in 32 bytes of element
 * order: byte k takes byte k / 8 of qh and tests bit k % 8 of it. */
static inline uint8x16x2_t neon_fifth_bits(const uint8_t *qh) {
    static const uint8_t pick_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t pick_hi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t bits;
    memcpy(&bits, qh, sizeof bits);
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(bits)); /* bytes 0-3: qh (little-endian) */
    uint8x16_t mask = vld1q_u8(bit), sixteen = vdupq_n_u8(0x10);
    uint8x16x2_t h;
    h.val[0] = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(pick_lo)), mask), sixteen);
    h.val[1] = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(pick_hi)), mask), sixteen);
    return h;
}

static inline int8x16x2_t neon_weights(int type, const uint8_t *blk, float *d, float *m) {
    int8x16x2_t q;
    uint16_t h;
    memcpy(&h, blk, 2);
    *d = fp16_to_fp32(h);
    if (type == PYLLM_TYPE_Q8_0) {
        q.val[0] = vld1q_s8((const int8_t *)blk + 2);
        q.val[1] = vld1q_s8((const int8_t *)blk + 18);
        return q;
    }
    /* the nibbles follow d, then m (Q4_1, Q5_1), then qh (Q5_0, Q5_1) */
    const int five = type == PYLLM_TYPE_Q5_0 || type == PYLLM_TYPE_Q5_1;
    const int with_min = type == PYLLM_TYPE_Q4_1 || type == PYLLM_TYPE_Q5_1;
    const uint8_t *qs = blk + 2 + 2 * with_min + 4 * five;
    uint8x16_t raw = vld1q_u8(qs);
    uint8x16_t lo = vandq_u8(raw, vdupq_n_u8(0x0F)), hi = vshrq_n_u8(raw, 4);
    if (five) {
        uint8x16x2_t high = neon_fifth_bits(qs - 4);
        lo = vorrq_u8(lo, high.val[0]);
        hi = vorrq_u8(hi, high.val[1]);
    }
    q.val[0] = vreinterpretq_s8_u8(lo);
    q.val[1] = vreinterpretq_s8_u8(hi);
    if (!with_min) { /* Q4_0, Q5_0: centred on 8, 16 */
        const int8x16_t centre = vdupq_n_s8(five ? 16 : 8);
        q.val[0] = vsubq_s8(q.val[0], centre);
        q.val[1] = vsubq_s8(q.val[1], centre);
    } else {
        memcpy(&h, blk + 2, 2);
        *m = fp16_to_fp32(h);
    }
    return q;
}

static inline int32_t neon_dot_i8(int8x16x2_t w, const int8_t *x) {
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int32x4_t acc = vdupq_n_s32(0);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w.val[0]), vget_low_s8(x0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(w.val[0]), vget_high_s8(x0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w.val[1]), vget_low_s8(x1)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(w.val[1]), vget_high_s8(x1)));
    return vaddvq_s32(acc);
}

static float neon_dot_f32(const float *a, const float *b, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) acc = vfmaq_f32(acc, vld1q_f32(a + i), vld1q_f32(b + i));
    float sum = vaddvq_f32(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static float neon_dot_f16(const uint16_t *w, const float *x, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4)
        acc = vfmaq_f32(acc, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w + i))), vld1q_f32(x + i));
    float sum = vaddvq_f32(acc);
    for (; i < n; i++) sum += fp16_to_fp32(w[i]) * x[i];
    return sum;
}

/* Every weight type: the traits table in dispatch.c points each type's NEON entry here. */
void kern_arm_matmul(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                     int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(w->type, w->cols);
    const size_t bsize = w->type == PYLLM_TYPE_Q8_0 ? sizeof(block_q8_0)
                       : w->type == PYLLM_TYPE_Q4_0 ? sizeof(block_q4_0)
                       : w->type == PYLLM_TYPE_Q4_1 ? sizeof(block_q4_1)
                       : w->type == PYLLM_TYPE_Q5_0 ? sizeof(block_q5_0) : sizeof(block_q5_1);
    const int nb = w->cols / QK8X;
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;
            float v = 0.0f;
            if (w->type == PYLLM_TYPE_F32) {
                v = neon_dot_f32((const float *)row, x + (size_t)t * w->cols, w->cols);
            } else if (w->type == PYLLM_TYPE_F16) {
                v = neon_dot_f16((const uint16_t *)row, x + (size_t)t * w->cols, w->cols);
            } else {
                const block_q8x *xt = xq + (size_t)t * nb;
                for (int b = 0; b < nb; b++) {
                    float d, m = 0.0f;
                    int8x16x2_t wq = neon_weights(w->type, row + (size_t)b * bsize, &d, &m);
                    v += d * xt[b].d * (float)neon_dot_i8(wq, xt[b].qs) + m * xt[b].s;
                }
            }
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

void kern_arm_attend(const float *q, const float *k, const float *v, int kv_stride, int n_pos,
                     int head_dim, float scale, float *scores, float *out) {
    float max = -INFINITY;
    for (int j = 0; j < n_pos; j++) {
        scores[j] = scale * neon_dot_f32(q, k + (size_t)j * kv_stride, head_dim);
        max = fmaxf(max, scores[j]);
    }
    float total = 0.0f;
    for (int j = 0; j < n_pos; j++) {
        scores[j] = expf(scores[j] - max);
        total += scores[j];
    }
    for (int i = 0; i < head_dim; i++) out[i] = 0.0f;
    for (int j = 0; j < n_pos; j++) {
        const float *vj = v + (size_t)j * kv_stride;
        float p = scores[j] / total;
        for (int i = 0; i < head_dim; i++) out[i] += p * vj[i];
    }
}
#endif /* HAVE_ARM_KERNELS */
