/* kernels.h - the small interface between the forward pass (model.c) and the compute kernels
 * (this directory: the reference kernels in ref.c, the SIMD ones of each CPU family in x86.c and
 * arm.c, chosen by dispatch.c). Every function takes the kernel family (enum pyllm_isa) chosen
 * once per model; SIMD code never leaks out of the kernel files. Functions taking (ith, nth) do
 * thread ith's share of the work out of nth threads and are called from inside one OpenMP
 * parallel region.
 */
#ifndef PYLLM_KERNELS_H
#define PYLLM_KERNELS_H

#include "../pyllm.h"
#include "quants.h" /* block_q8x, the activation blocks of QK8X values */

int kern_isa_best(void);
int kern_isa_available(int isa);

/* 1 if weights of this type multiply against quantized activations (block_q8x), 0 if against
 * float rows. */
int kern_type_quantized(int type);
/* Bytes of one row of `cols` values, or 0 if the type is unknown or cols does not fit its blocks. */
size_t kern_row_bytes(int type, int cols);

/* Quantize n rows of `cols` floats (cols % QK8X == 0) to blocks (d = max|x| / 127, rounding to
 * nearest even); the blocks are split among threads. */
void kern_quantize_rows(int isa, const float *x, int n, int cols, block_q8x *xq, int ith, int nth);

/* y[t][r] (+)= dot(W[r], x[t]) for t < n and this thread's share of rows r. y has w->rows floats
 * per row. x is (n, w->cols) floats; xq is x quantized, used when the weights are quantized.
 * With accumulate set, results are added to y (residual connections) instead of stored. */
void kern_matmul(int isa, const pyllm_tensor *w, const float *x, const block_q8x *xq, int n,
                 float *y, int accumulate, int ith, int nth);

/* gate = silu(gate) * up, elementwise over n rows of `cols` values (SwiGLU): this thread's share,
 * with no barrier inside (every thread of the team calls it; the caller waits before reading gate).
 * An element's value depends on its inputs, column and isa only, not on n or the thread split. */
void kern_swiglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth);
/* gate = gelu_tanh(gate) * up (Gemma's GELU-gated MLP), shared out as kern_swiglu. GELU's tanh
 * approximation 0.5 g (1 + tanh(y)), y = sqrt(2/pi) (g + 0.044715 g^3), is computed as the equal
 * g / (1 + exp(-2y)): silu's form, exact where 1 + tanh(y) would cancel. */
void kern_geglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth);

/* Query heads kern_attend works on at once, reading each cached key and value once for them. */
#define KERN_ATTEND_HEADS 3

/* Attention for one token of n_q query heads that share a key/value head: for each g < n_q,
 * out_g = softmax(scale * K q_g) V over n_pos cached positions. q and out hold the n_q heads
 * head_dim floats apart; k and v point at position 0 of the shared head's keys/values, successive
 * positions kv_stride floats apart. scores is scratch of min(n_q, KERN_ATTEND_HEADS) * n_pos floats. */
void kern_attend(int isa, const float *q, int n_q, const float *k, const float *v, int kv_stride,
                 int n_pos, int head_dim, float scale, float *scores, float *out);

/* n values (n % block size == 0) of one row of a weight type, as floats. */
void kern_dequantize_row(int type, const void *src, float *dst, int n);

#endif
