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
void kern_arm_matmul(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq_,
                     int n, float *y, int accumulate) {
    const block_q8x *xq = xq_;
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

/* Q8_0 against float activations (kern_matmul_float, the classifier): per block d * (q . x), the
 * 32 values widened to eight vectors of 4 floats. */
void kern_arm_matmul_float_q8_0(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                                int n, float *y, int accumulate) {
    (void)xq;
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q8_0, w->cols);
    const int nb = w->cols / QK8_0;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * w->cols;
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const block_q8_0 *row = (const block_q8_0 *)((const uint8_t *)w->data + (size_t)r * rb);
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                const float *xb = xt + (size_t)b * QK8_0;
                const int8x16_t q[2] = {vld1q_s8(row[b].qs), vld1q_s8(row[b].qs + 16)};
                float32x4_t p = vdupq_n_f32(0.0f);
                for (int h = 0; h < 2; h++) {
                    const int16x8_t lo = vmovl_s8(vget_low_s8(q[h])), hi = vmovl_high_s8(q[h]);
                    p = vfmaq_f32(p, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(xb + 16 * h));
                    p = vfmaq_f32(p, vcvtq_f32_s32(vmovl_high_s16(lo)), vld1q_f32(xb + 16 * h + 4));
                    p = vfmaq_f32(p, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(xb + 16 * h + 8));
                    p = vfmaq_f32(p, vcvtq_f32_s32(vmovl_high_s16(hi)), vld1q_f32(xb + 16 * h + 12));
                }
                acc = vfmaq_n_f32(acc, p, fp16_to_fp32(row[b].d));
            }
            const float v = vaddvq_f32(acc);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* K-quants against block_q8k activations */

/* Sum of 16 products of signed bytes. */
static inline int32_t neon_dot16(int8x16_t w, const int8_t *x) {
    int8x16_t xv = vld1q_s8(x);
    int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(xv)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(w), vget_high_s8(xv)));
    return vaddvq_s32(acc);
}

/* The 32 values of sub-block sb of a Q4_K (qh NULL) or Q5_K super-block, 0..31, as bytes. */
static inline int8x16x2_t neon_q45_k_values(const uint8_t *qs, const uint8_t *qh, int sb) {
    int8x16x2_t v;
    for (int i = 0; i < 2; i++) {
        uint8x16_t raw = vld1q_u8(qs + 32 * (sb / 2) + 16 * i);
        uint8x16_t q = sb % 2 ? vshrq_n_u8(raw, 4) : vandq_u8(raw, vdupq_n_u8(0x0F));
        if (qh) {
            uint8x16_t bit = vandq_u8(vshlq_u8(vld1q_u8(qh + 16 * i), vdupq_n_s8((int8_t)-sb)), vdupq_n_u8(1));
            q = vorrq_u8(q, vshlq_n_u8(bit, 4));
        }
        v.val[i] = vreinterpretq_s8_u8(q);
    }
    return v;
}

/* The 32 values 32k .. 32k+31 of half h of a Q6_K super-block, less 32, as signed bytes. */
static inline int8x16x2_t neon_q6_k_values(const block_q6_K *b, int h, int k) {
    int8x16x2_t v;
    for (int i = 0; i < 2; i++) {
        uint8x16_t ql = vld1q_u8(b->ql + 64 * h + 32 * (k & 1) + 16 * i);
        uint8x16_t qh = vld1q_u8(b->qh + 32 * h + 16 * i);
        uint8x16_t lo = k < 2 ? vandq_u8(ql, vdupq_n_u8(0x0F)) : vshrq_n_u8(ql, 4);
        uint8x16_t hi = vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(4 - 2 * k))), vdupq_n_u8(0x30));
        v.val[i] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), vdupq_n_s8(32));
    }
    return v;
}

static float neon_dot_q45_k(int type, const uint8_t *row, const block_q8k *x, int nb) {
    const size_t bsize = type == PYLLM_TYPE_Q4_K ? sizeof(block_q4_K) : sizeof(block_q5_K);
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bsize;
        const block_q4_K *h = (const block_q4_K *)blk; /* d, dmin, scales: the same in Q5_K */
        const uint8_t *qs = type == PYLLM_TYPE_Q4_K ? h->qs : ((const block_q5_K *)blk)->qs;
        const uint8_t *qh = type == PYLLM_TYPE_Q4_K ? NULL : ((const block_q5_K *)blk)->qh;
        uint8_t sc[8], mn[8];
        kquant_scales(h->scales, sc, mn);
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 8; sb++) {
            isum += sc[sb] * neon_dot_i8(neon_q45_k_values(qs, qh, sb), x[b].qs + 32 * sb);
            msum += mn[sb] * (x[b].bsums[2 * sb] + x[b].bsums[2 * sb + 1]);
        }
        sum += fp16_to_fp32(h->d) * x[b].d * (float)isum - fp16_to_fp32(h->dmin) * x[b].d * (float)msum;
    }
    return sum;
}

static float neon_dot_q6_k(const block_q6_K *w, const block_q8k *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int isum = 0;
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                int8x16x2_t v = neon_q6_k_values(&w[b], h, k);
                const int at = 128 * h + 32 * k;
                isum += w[b].scales[at / 16] * neon_dot16(v.val[0], x[b].qs + at);
                isum += w[b].scales[at / 16 + 1] * neon_dot16(v.val[1], x[b].qs + at + 16);
            }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)isum;
    }
    return sum;
}

static inline void neon_matmul_k(const int type, const pyllm_tensor *w, int r0, int r1,
                                 const block_q8k *xk, int n, float *y, int accumulate) {
    const size_t rb = kern_row_bytes(type, w->cols);
    const int nb = w->cols / QK_K;
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;
            float v = type == PYLLM_TYPE_Q6_K ? neon_dot_q6_k((const block_q6_K *)row, xk + (size_t)t * nb, nb)
                                              : neon_dot_q45_k(type, row, xk + (size_t)t * nb, nb);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

void kern_arm_matmul_q4_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    (void)x;
    neon_matmul_k(PYLLM_TYPE_Q4_K, w, r0, r1, xq, n, y, accumulate);
}

void kern_arm_matmul_q5_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    (void)x;
    neon_matmul_k(PYLLM_TYPE_Q5_K, w, r0, r1, xq, n, y, accumulate);
}

void kern_arm_matmul_q6_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    (void)x;
    neon_matmul_k(PYLLM_TYPE_Q6_K, w, r0, r1, xq, n, y, accumulate);
}

/* 16 signed bytes times their factor ds, less dm: multiply, then subtract, each rounded as the
 * reference does (vmulq, vsubq: no fused multiply-add). */
static inline void neon_dequantize16(int8x16_t q, float32x4_t ds, float32x4_t dm, float *dst) {
    int16x8_t h[2] = {vmovl_s8(vget_low_s8(q)), vmovl_s8(vget_high_s8(q))};
    for (int i = 0; i < 2; i++) {
        float32x4_t lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(h[i])));
        float32x4_t hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(h[i])));
        vst1q_f32(dst + 8 * i, vsubq_f32(vmulq_f32(ds, lo), dm));
        vst1q_f32(dst + 8 * i + 4, vsubq_f32(vmulq_f32(ds, hi), dm));
    }
}

static void neon_dequantize_row_q45_k(int type, const void *src, float *dst, int n) {
    const size_t bsize = type == PYLLM_TYPE_Q4_K ? sizeof(block_q4_K) : sizeof(block_q5_K);
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)i * bsize;
        const block_q4_K *h = (const block_q4_K *)blk;
        const uint8_t *qs = type == PYLLM_TYPE_Q4_K ? h->qs : ((const block_q5_K *)blk)->qs;
        const uint8_t *qh = type == PYLLM_TYPE_Q4_K ? NULL : ((const block_q5_K *)blk)->qh;
        uint8_t sc[8], mn[8];
        kquant_scales(h->scales, sc, mn);
        const float d = fp16_to_fp32(h->d), dmin = fp16_to_fp32(h->dmin);
        for (int sb = 0; sb < 8; sb++) {
            int8x16x2_t v = neon_q45_k_values(qs, qh, sb);
            float32x4_t ds = vdupq_n_f32(d * sc[sb]), dm = vdupq_n_f32(dmin * mn[sb]);
            neon_dequantize16(v.val[0], ds, dm, dst + 32 * sb);
            neon_dequantize16(v.val[1], ds, dm, dst + 32 * sb + 16);
        }
    }
}

void kern_arm_dequantize_row_q4_k(const void *src, float *dst, int n) {
    neon_dequantize_row_q45_k(PYLLM_TYPE_Q4_K, src, dst, n);
}

void kern_arm_dequantize_row_q5_k(const void *src, float *dst, int n) {
    neon_dequantize_row_q45_k(PYLLM_TYPE_Q5_K, src, dst, n);
}

void kern_arm_dequantize_row_q6_k(const void *src, float *dst, int n) {
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        const block_q6_K *b = (const block_q6_K *)src + i;
        const float d = fp16_to_fp32(b->d);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                int8x16x2_t v = neon_q6_k_values(b, h, k);
                const int at = 128 * h + 32 * k;
                /* d * scale * q; subtracting 0 changes no value (-0 stays -0: d * scale * 0 is +-0 alike) */
                neon_dequantize16(v.val[0], vdupq_n_f32(d * b->scales[at / 16]), zero, dst + at);
                neon_dequantize16(v.val[1], vdupq_n_f32(d * b->scales[at / 16 + 1]), zero, dst + at + 16);
            }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantization: d = max|x| / 127, q = x / d rounded to nearest even (vcvtnq) */

static inline float neon_amax(const float *v, int n) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int i = 0; i < n; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(v + i)));
    return vmaxvq_f32(m);
}

/* 16 floats times id to int8 at out; returns their sum. */
static inline int neon_quantize16(const float *v, float id, int8_t *out) {
    int32x4_t q[4];
    for (int i = 0; i < 4; i++) q[i] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(v + 4 * i), id));
    int16x8_t lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    int16x8_t hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vst1q_s8(out, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
    return vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
}

void kern_arm_quantize_block(const float *v, void *out_) {
    block_q8x *out = out_;
    const float d = neon_amax(v, QK8X) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK8X; j += 16) sum += neon_quantize16(v + j, id, out->qs + j);
    out->d = d;
    out->s = d * (float)sum;
}

void kern_arm_quantize_block_q8k(const float *v, void *out_) {
    block_q8k *out = out_;
    const float d = neon_amax(v, QK_K) / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK_K; j += 16) out->bsums[j / 16] = (int16_t)neon_quantize16(v + j, id, out->qs + j);
    out->d = d;
}

void kern_arm_attend(const float *q, const kern_kv_run *runs, int n_runs, int kv_stride, int n_pos,
                     int head_dim, float scale, float *scores, float *out) {
    float max = -INFINITY;
    for (int r = 0, j = 0; r < n_runs; r++)
        for (int jj = 0; jj < runs[r].n; jj++, j++) {
            scores[j] = scale * neon_dot_f32(q, runs[r].k + (size_t)jj * kv_stride, head_dim);
            max = fmaxf(max, scores[j]);
        }
    float total = 0.0f;
    for (int j = 0; j < n_pos; j++) {
        scores[j] = expf(scores[j] - max);
        total += scores[j];
    }
    for (int i = 0; i < head_dim; i++) out[i] = 0.0f;
    for (int r = 0, j = 0; r < n_runs; r++)
        for (int jj = 0; jj < runs[r].n; jj++, j++) {
            const float *vj = runs[r].v + (size_t)jj * kv_stride;
            float p = scores[j] / total;
            for (int i = 0; i < head_dim; i++) out[i] += p * vj[i];
        }
}
#endif /* HAVE_ARM_KERNELS */
