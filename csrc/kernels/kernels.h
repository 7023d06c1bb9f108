/* kernels.h - the small interface between the forward pass (model.c) and the compute kernels
 * (this directory: the reference kernels in ref.c, the SIMD ones of each CPU family in x86.c and
 * arm.c, chosen by dispatch.c). Every function takes the kernel family (enum pyllm_isa) chosen
 * once per model; SIMD code never leaks out of the kernel files. Functions taking (ith, nth) do
 * thread ith's share of the work out of nth threads and are called by every thread of a team
 * (team.h) running one pass.
 */
#ifndef PYLLM_KERNELS_H
#define PYLLM_KERNELS_H

#include "../pyllm.h"
#include "quants.h" /* block_q8x, block_q8k: the quantized activations */

int kern_isa_best(void);
int kern_isa_available(int isa);

/* The activations a weight type's matmul multiplies against (a column of dispatch.c's traits
 * table). The forward pass quantizes a matmul input into each format that some weight reading it
 * needs, once, and every matmul reading it takes its own. */
enum kern_act {
    KERN_ACT_F32 = 0, /* the float rows themselves */
    KERN_ACT_Q8X = 1, /* 8-bit blocks of QK8X values (block_q8x): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 */
    KERN_ACT_Q8K = 2, /* 8-bit blocks of QK_K values with sums of 16 (block_q8k): the K-quants */
    KERN_ACT_COUNT
};

/* The enum kern_act a weight type multiplies against, or -1 if the type is unknown. */
int kern_type_act(int type);
/* Bytes of one row of `cols` values, or 0 if the type is unknown or cols does not fit its blocks. */
size_t kern_row_bytes(int type, int cols);
/* Bytes of one row of `cols` activations quantized to format act (0 for KERN_ACT_F32, or if cols
 * does not fill its blocks). */
size_t kern_act_row_bytes(int act, int cols);

/* One matmul input of n rows: the floats, and the same rows in each quantized format (NULL where
 * no weight reading this input needs it). */
typedef struct {
    const float *x;        /* (n, cols) */
    const block_q8x *q8x;  /* (n, cols / QK8X) */
    const block_q8k *q8k;  /* (n, cols / QK_K) */
} kern_input;

/* Quantize n rows of `cols` floats to blocks of format act (cols a multiple of its block size;
 * d = max|x| / 127 per block, rounding to nearest even); the blocks are split among threads. */
void kern_quantize_rows(int isa, int act, const float *x, int n, int cols, void *out, int ith, int nth);

/* y[t][r] (+)= dot(W[r], x[t]) for t < n and this thread's share of rows r. y has w->rows floats
 * per row. The kernel reads in's rows in the format w's type multiplies against. With
 * accumulate set, results are added to y (residual connections) instead of stored. */
void kern_matmul(int isa, const pyllm_tensor *w, const kern_input *in, int n, float *y,
                 int accumulate, int ith, int nth);
/* kern_matmul over rows [r0, r1) alone, by the calling thread (r0 and r1 multiples of
 * KERN_ROW_ALIGN, or r1 = w->rows): a row's result does not depend on how rows are split. */
#define KERN_ROW_ALIGN 16
void kern_matmul_rows(int isa, const pyllm_tensor *w, const kern_input *in, int n, float *y,
                      int accumulate, int r0, int r1);
/* 1 if kern_matmul_float has a kernel for the weight type (F32, F16, Q8_0), else 0. */
int kern_type_float_matmul(int type);
/* kern_matmul against the float rows x as they are, not quantized to 8 bits: the classifier's,
 * where rounding the activations flips near-tied logits. Only for a type kern_type_float_matmul
 * accepts (others do nothing). */
void kern_matmul_float(int isa, const pyllm_tensor *w, const float *x, int n, float *y,
                       int accumulate, int ith, int nth);
/* kern_matmul_float over rows [r0, r1) alone (as kern_matmul_rows). */
void kern_matmul_float_rows(int isa, const pyllm_tensor *w, const float *x, int n, float *y,
                            int accumulate, int r0, int r1);

/* gate = silu(gate) * up, elementwise over n rows of `cols` values (SwiGLU): this thread's share,
 * with no barrier inside (every thread of the team calls it; the caller waits before reading gate).
 * An element's value depends on its inputs, column and isa only, not on n or the thread split. */
void kern_swiglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth);
/* gate = gelu_tanh(gate) * up (Gemma's GELU-gated MLP), shared out as kern_swiglu. GELU's tanh
 * approximation 0.5 g (1 + tanh(y)), y = sqrt(2/pi) (g + 0.044715 g^3), is computed as the equal
 * g / (1 + exp(-2y)): silu's form, exact where 1 + tanh(y) would cancel. */
void kern_geglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth);

/* Query heads kern_attend works on at once, reading each cached key and value once for them. */
#define KERN_ATTEND_HEADS 4

/* A stretch of n cached positions of one key/value head: k and v point at the first one's key and
 * value, successive positions kv_stride floats apart. A cache in blocks (paged) gives one run per
 * block; a contiguous one a single run. */
typedef struct {
    const float *k, *v;
    int n;
} kern_kv_run;

/* Attention for one token of n_q query heads that share a key/value head: for each g < n_q,
 * out_g = softmax(scale * K q_g) V over the n_pos cached positions of runs[0 .. n_runs) in order
 * (their n add up to n_pos). q and out hold the n_q heads head_dim floats apart. scores is scratch
 * of min(n_q, KERN_ATTEND_HEADS) * n_pos floats. A result depends on the runs' boundaries only
 * where a run's length is not a multiple of 8. */
void kern_attend(int isa, const float *q, int n_q, const kern_kv_run *runs, int n_runs, int kv_stride,
                 int n_pos, int head_dim, float scale, float *scores, float *out);

/* n values (n % block size == 0) of one row of a weight type, as floats (exactly: every family
 * gives the same floats). */
void kern_dequantize_row(int isa, int type, const void *src, float *dst, int n);

#endif
