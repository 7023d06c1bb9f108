/* ref.c - the portable kernels: plain C, the reference every SIMD kernel is tested against, and the
 * whole story on CPUs we have no SIMD for.
 *
 * Quantized weights multiply against activations quantized to 8 bits per block (block_q8x, or
 * block_q8k for the K-quants): integer dot products per block, one float scale per block pair.
 * The K-quants sum each sub-block's products times its integer scale within the super-block and
 * take the min (Q4_K, Q5_K) or -32 (Q6_K) term from the activations' sums of 16 (bsums).
 */
#include "arch.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Rows of each weight type as floats */

void kern_ref_dequantize_row_f32(const void *src, float *dst, int n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void kern_ref_dequantize_row_f16(const void *src, float *dst, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) dst[i] = fp16_to_fp32(h[i]);
}

void kern_ref_dequantize_row_q8_0(const void *src, float *dst, int n) {
    const block_q8_0 *b = src;
    for (int i = 0; i < n / QK8_0; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = b[i].qs[j] * d;
    }
}

void kern_ref_dequantize_row_q4_0(const void *src, float *dst, int n) {
    const block_q4_0 *b = src;
    for (int i = 0; i < n / QK4_0; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[i * QK4_0 + j] = ((b[i].qs[j] & 0x0F) - 8) * d;
            dst[i * QK4_0 + j + QK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void kern_ref_dequantize_row_q4_1(const void *src, float *dst, int n) {
    const block_q4_1 *b = src;
    for (int i = 0; i < n / QK4_1; i++) {
        float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[i * QK4_1 + j] = (b[i].qs[j] & 0x0F) * d + m;
            dst[i * QK4_1 + j + QK4_1 / 2] = (b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* The 5-bit values of a Q5_0/Q5_1 block, 0..31, in element order. */
static void q5_values(const uint8_t qh[4], const uint8_t qs[16], int q[32]) {
    uint32_t high = q5_high_bits(qh);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0F) | (int)((high >> j) & 1u) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((high >> (j + 16)) & 1u) << 4;
    }
}

void kern_ref_dequantize_row_q5_0(const void *src, float *dst, int n) {
    const block_q5_0 *b = src;
    for (int i = 0; i < n / QK5_0; i++) {
        float d = fp16_to_fp32(b[i].d);
        int q[QK5_0];
        q5_values(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK5_0; j++) dst[i * QK5_0 + j] = (q[j] - 16) * d;
    }
}

void kern_ref_dequantize_row_q5_1(const void *src, float *dst, int n) {
    const block_q5_1 *b = src;
    for (int i = 0; i < n / QK5_1; i++) {
        float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        int q[QK5_1];
        q5_values(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK5_1; j++) dst[i * QK5_1 + j] = q[j] * d + m;
    }
}

/* The K-quants, in the order of operations of pyllm.quant.dequantize (and ggml): the sub-block's
 * factors d * scale and dmin * min first, then value = factor * q - min factor, each rounded to
 * float; as two statements, so that no compiler fuses them into one multiply-add. */

void kern_ref_dequantize_row_q4_k(const void *src, float *dst, int n) {
    const block_q4_K *b = src;
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        uint8_t sc[8], mn[8];
        kquant_scales(b[i].scales, sc, mn);
        const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++) {
            const float ds = d * sc[sb], dm = dmin * mn[sb];
            const uint8_t *q = b[i].qs + 32 * (sb / 2);
            for (int l = 0; l < 32; l++) {
                const float v = ds * (float)(sb % 2 ? q[l] >> 4 : q[l] & 0x0F);
                dst[32 * sb + l] = v - dm;
            }
        }
    }
}

void kern_ref_dequantize_row_q5_k(const void *src, float *dst, int n) {
    const block_q5_K *b = src;
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        uint8_t sc[8], mn[8];
        kquant_scales(b[i].scales, sc, mn);
        const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++) {
            const float ds = d * sc[sb], dm = dmin * mn[sb];
            const uint8_t *q = b[i].qs + 32 * (sb / 2);
            for (int l = 0; l < 32; l++) {
                int v5 = (sb % 2 ? q[l] >> 4 : q[l] & 0x0F) | ((b[i].qh[l] >> sb) & 1) << 4;
                const float v = ds * (float)v5;
                dst[32 * sb + l] = v - dm;
            }
        }
    }
}

/* The 6-bit value 32k + l (k < 4, l < 32) of one half of a Q6_K block, 0..63 (the -32 not applied). */
static inline int q6_k_value(const uint8_t *ql, const uint8_t *qh, int k, int l) {
    const uint8_t lo = ql[32 * (k & 1) + l];
    return (k < 2 ? lo & 0x0F : lo >> 4) | ((qh[l] >> (2 * k)) & 3) << 4;
}

void kern_ref_dequantize_row_q6_k(const void *src, float *dst, int n) {
    const block_q6_K *b = src;
    for (int i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = fp16_to_fp32(b[i].d);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                const int at = 128 * h + 32 * k;
                const float d0 = d * b[i].scales[at / 16], d1 = d * b[i].scales[at / 16 + 1];
                for (int l = 0; l < 32; l++)
                    dst[at + l] = (l < 16 ? d0 : d1) * (float)(q6_k_value(b[i].ql + 64 * h, b[i].qh + 32 * h, k, l) - 32);
            }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantization */

void kern_ref_quantize_block_q8k(const float *v, void *out_) {
    block_q8k *out = out_;
    float amax = 0.0f;
    for (int j = 0; j < QK_K; j++) {
        float a = fabsf(v[j]);
        amax = a > amax ? a : amax;
    }
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < QK_K / 16; i++) {
        int sum = 0;
        for (int j = 16 * i; j < 16 * i + 16; j++) {
            int q = (int)rintf(v[j] * id);
            out->qs[j] = (int8_t)q;
            sum += q;
        }
        out->bsums[i] = (int16_t)sum;
    }
    out->d = d;
}

void kern_ref_quantize_block(const float *v, void *out_) {
    block_q8x *out = out_;
    float amax = 0.0f;
    for (int j = 0; j < QK8X; j++) {
        float a = fabsf(v[j]);
        amax = a > amax ? a : amax;
    }
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK8X; j++) {
        int q = (int)rintf(v[j] * id);
        out->qs[j] = (int8_t)q;
        sum += q;
    }
    out->d = d;
    out->s = d * (float)sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Matmul */

static float dot_f32_ref(const float *w, const float *x, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f16_ref(const uint16_t *w, const float *x, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += fp16_to_fp32(w[i]) * x[i];
    return sum;
}

static float dot_q8_0_ref(const block_q8_0 *w, const block_q8x *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < QK8_0; j++) acc += w[b].qs[j] * x[b].qs[j];
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)acc;
    }
    return sum;
}

static float dot_q4_0_ref(const block_q4_0 *w, const block_q8x *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            acc += ((w[b].qs[j] & 0x0F) - 8) * x[b].qs[j];
            acc += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + QK4_0 / 2];
        }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)acc;
    }
    return sum;
}

static float dot_q4_1_ref(const block_q4_1 *w, const block_q8x *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            acc += (w[b].qs[j] & 0x0F) * x[b].qs[j];
            acc += (w[b].qs[j] >> 4) * x[b].qs[j + QK4_1 / 2];
        }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)acc + fp16_to_fp32(w[b].m) * x[b].s;
    }
    return sum;
}

static float dot_q5_0_ref(const block_q5_0 *w, const block_q8x *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int q[QK5_0], acc = 0;
        q5_values(w[b].qh, w[b].qs, q);
        for (int j = 0; j < QK5_0; j++) acc += (q[j] - 16) * x[b].qs[j];
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)acc;
    }
    return sum;
}

/* Q4_K and Q5_K: the sum over sub-blocks of scale * (q . x), and of min * (sum of x), per
 * super-block, then d * xd * the first - dmin * xd * the second. */
static float dot_q4_k_ref(const block_q4_K *w, const block_q8k *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        uint8_t sc[8], mn[8];
        kquant_scales(w[b].scales, sc, mn);
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 8; sb++) {
            const uint8_t *q = w[b].qs + 32 * (sb / 2);
            const int8_t *xs = x[b].qs + 32 * sb;
            int acc = 0;
            for (int l = 0; l < 32; l++) acc += (sb % 2 ? q[l] >> 4 : q[l] & 0x0F) * xs[l];
            isum += sc[sb] * acc;
            msum += mn[sb] * (x[b].bsums[2 * sb] + x[b].bsums[2 * sb + 1]);
        }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)isum - fp16_to_fp32(w[b].dmin) * x[b].d * (float)msum;
    }
    return sum;
}

static float dot_q5_1_ref(const block_q5_1 *w, const block_q8x *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int q[QK5_1], acc = 0;
        q5_values(w[b].qh, w[b].qs, q);
        for (int j = 0; j < QK5_1; j++) acc += q[j] * x[b].qs[j];
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)acc + fp16_to_fp32(w[b].m) * x[b].s;
    }
    return sum;
}

static float dot_q5_k_ref(const block_q5_K *w, const block_q8k *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        uint8_t sc[8], mn[8];
        kquant_scales(w[b].scales, sc, mn);
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 8; sb++) {
            const uint8_t *q = w[b].qs + 32 * (sb / 2);
            const int8_t *xs = x[b].qs + 32 * sb;
            int acc = 0;
            for (int l = 0; l < 32; l++)
                acc += ((sb % 2 ? q[l] >> 4 : q[l] & 0x0F) | ((w[b].qh[l] >> sb) & 1) << 4) * xs[l];
            isum += sc[sb] * acc;
            msum += mn[sb] * (x[b].bsums[2 * sb] + x[b].bsums[2 * sb + 1]);
        }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)isum - fp16_to_fp32(w[b].dmin) * x[b].d * (float)msum;
    }
    return sum;
}

/* Q6_K: per sub-block of 16, scale * (q . x - 32 * sum of x), with q 0..63. */
static float dot_q6_k_ref(const block_q6_K *w, const block_q8k *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int isum = 0;
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int half = 0; half < 2; half++) {
                    const int at = 128 * h + 32 * k + 16 * half;
                    int acc = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        acc += q6_k_value(w[b].ql + 64 * h, w[b].qh + 32 * h, k, l) * x[b].qs[128 * h + 32 * k + l];
                    isum += w[b].scales[at / 16] * (acc - 32 * x[b].bsums[at / 16]);
                }
        sum += fp16_to_fp32(w[b].d) * x[b].d * (float)isum;
    }
    return sum;
}

/* Rows [r0, r1) for all n activation rows, one dot product at a time; always inlined with a
 * constant type, once per type below. */
KERN_ALWAYS_INLINE void ref_matmul(const int type, const pyllm_tensor *w, int r0, int r1,
                                   const float *x, const void *xq, int n, float *y,
                                   int accumulate) {
    size_t rb = kern_row_bytes(w->type, w->cols);
    int nb = w->cols / QK8X, nbk = w->cols / QK_K;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * w->cols;
        const block_q8x *qt = (const block_q8x *)xq + (size_t)t * nb;
        const block_q8k *kt = (const block_q8k *)xq + (size_t)t * nbk;
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            const void *row = (const uint8_t *)w->data + (size_t)r * rb;
            float v = 0.0f;
            switch (type) {
            case PYLLM_TYPE_F32: v = dot_f32_ref(row, xt, w->cols); break;
            case PYLLM_TYPE_F16: v = dot_f16_ref(row, xt, w->cols); break;
            case PYLLM_TYPE_Q8_0: v = dot_q8_0_ref(row, qt, nb); break;
            case PYLLM_TYPE_Q4_0: v = dot_q4_0_ref(row, qt, nb); break;
            case PYLLM_TYPE_Q4_1: v = dot_q4_1_ref(row, qt, nb); break;
            case PYLLM_TYPE_Q5_0: v = dot_q5_0_ref(row, qt, nb); break;
            case PYLLM_TYPE_Q5_1: v = dot_q5_1_ref(row, qt, nb); break;
            case PYLLM_TYPE_Q4_K: v = dot_q4_k_ref(row, kt, nbk); break;
            case PYLLM_TYPE_Q5_K: v = dot_q5_k_ref(row, kt, nbk); break;
            case PYLLM_TYPE_Q6_K: v = dot_q6_k_ref(row, kt, nbk); break;
            }
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

void kern_ref_matmul_f32(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                         int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_F32, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_f16(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                         int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_F16, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q8_0(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q8_0, w, r0, r1, x, xq, n, y, accumulate);
}

/* Q8_0 against float activations: per block, d times the sum of q x. */
static float dot_q8_0_float_ref(const block_q8_0 *w, const float *x, int nb) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        float s = 0.0f;
        for (int l = 0; l < QK8_0; l++) s += w[b].qs[l] * x[b * QK8_0 + l];
        sum += fp16_to_fp32(w[b].d) * s;
    }
    return sum;
}

void kern_ref_matmul_float_q8_0(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                                int n, float *y, int accumulate) {
    (void)xq;
    const size_t rb = kern_row_bytes(PYLLM_TYPE_Q8_0, w->cols);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * w->cols;
        float *yt = y + (size_t)t * w->rows;
        for (int r = r0; r < r1; r++) {
            float v = dot_q8_0_float_ref((const block_q8_0 *)((const uint8_t *)w->data + (size_t)r * rb),
                                         xt, w->cols / QK8_0);
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

void kern_ref_matmul_q4_0(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q4_0, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q4_1(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q4_1, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q5_0(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q5_0, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q5_1(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q5_1, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q4_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q4_K, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q5_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q5_K, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q6_k(const pyllm_tensor *w, int r0, int r1, const float *x, const void *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q6_K, w, r0, r1, x, xq, n, y, accumulate);
}

/* ------------------------------------------------------------------------------------------ */
/* Attention */

void kern_ref_attend(const float *q, const kern_kv_run *runs, int n_runs, int kv_stride, int n_pos,
                     int head_dim, float scale, float *scores, float *out) {
    float max = -INFINITY;
    for (int r = 0, j = 0; r < n_runs; r++)
        for (int jj = 0; jj < runs[r].n; jj++, j++) {
            scores[j] = scale * dot_f32_ref(q, runs[r].k + (size_t)jj * kv_stride, head_dim);
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
