/* ref.c - the portable kernels: plain C, the reference every SIMD kernel is tested against, and the
 * whole story on CPUs we have no SIMD for.
 *
 * Quantized weights multiply against activations quantized to 8 bits per block (block_q8x):
 * integer dot products per block, one float scale per block pair.
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

/* ------------------------------------------------------------------------------------------ */
/* Activation quantization */

void kern_ref_quantize_block(const float *v, block_q8x *out) {
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

/* Rows [r0, r1) for all n activation rows, one dot product at a time; always inlined with a
 * constant type, once per type below. */
KERN_ALWAYS_INLINE void ref_matmul(const int type, const pyllm_tensor *w, int r0, int r1,
                                   const float *x, const block_q8x *xq, int n, float *y,
                                   int accumulate) {
    size_t rb = kern_row_bytes(w->type, w->cols);
    int nb = w->cols / QK8X;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * w->cols;
        const block_q8x *qt = xq + (size_t)t * nb;
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
            }
            yt[r] = accumulate ? yt[r] + v : v;
        }
    }
}

void kern_ref_matmul_f32(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                         int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_F32, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_f16(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                         int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_F16, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q8_0(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q8_0, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q4_0(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q4_0, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q4_1(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q4_1, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q5_0(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q5_0, w, r0, r1, x, xq, n, y, accumulate);
}

void kern_ref_matmul_q5_1(const pyllm_tensor *w, int r0, int r1, const float *x, const block_q8x *xq,
                          int n, float *y, int accumulate) {
    ref_matmul(PYLLM_TYPE_Q5_1, w, r0, r1, x, xq, n, y, accumulate);
}

/* ------------------------------------------------------------------------------------------ */
/* Attention */

void kern_ref_attend(const float *q, const float *k, const float *v, int kv_stride, int n_pos,
                     int head_dim, float scale, float *scores, float *out) {
    float max = -INFINITY;
    for (int j = 0; j < n_pos; j++) {
        scores[j] = scale * dot_f32_ref(q, k + (size_t)j * kv_stride, head_dim);
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
