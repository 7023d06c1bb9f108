/* arch.h - what each kernel file gives dispatch.c: the reference kernels (ref.c, kern_ref_*), and
 * the SIMD kernels of each CPU family this build can have (x86.c, kern_x86_*; arm.c, kern_arm_*).
 * Only dispatch.c calls them, after choosing by weight type and kernel family (enum pyllm_isa).
 */
#ifndef PYLLM_KERNELS_ARCH_H
#define PYLLM_KERNELS_ARCH_H

#include "kernels.h"

/* x86-64: AVX2 and AVX-512 kernels, compiled with per-function target attributes and chosen at
 * run time, so one build runs on CPUs without AVX2. aarch64: NEON, always present there. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_KERNELS 1
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define HAVE_ARM_KERNELS 1
#endif

/* For kernel templates: inlined into every caller, where constant arguments (a weight type, a
 * tile shape) fold away. */
#if defined(__GNUC__) || defined(__clang__)
#define KERN_ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define KERN_ALWAYS_INLINE static __forceinline
#else
#define KERN_ALWAYS_INLINE static inline
#endif

/* Kernel families are enum pyllm_isa values 0 .. KERN_ISA_COUNT - 1. */
#define KERN_ISA_COUNT (PYLLM_ISA_AVX512 + 1)

/* Rows [r0, r1) of w for n activation rows: y[t][r] (+)= dot(W[r], x[t]), reading the float rows
 * x or their blocks xq in the format the weight type multiplies against (block_q8x or block_q8k;
 * see kern_matmul). One call does a thread's whole share of a matmul. */
typedef void kern_matmul_fn(const pyllm_tensor *w, int r0, int r1, const float *x,
                            const void *xq, int n, float *y, int accumulate);
/* n values (whole blocks) of a row of one weight type, as floats. */
typedef void kern_dequantize_fn(const void *src, float *dst, int n);
/* One activation block (QK8X floats to a block_q8x, or QK_K to a block_q8k) to int8 with
 * d = max|x| / 127, rounding to nearest even. */
typedef void kern_quantize_block_fn(const float *v, void *out);
/* Attention of one query head: kern_attend's arguments with n_q = 1. */
typedef void kern_attend_head_fn(const float *q, const kern_kv_run *runs, int n_runs, int kv_stride,
                                 int n_pos, int head_dim, float scale, float *scores, float *out);

/* Shared between the kernel files only: not exported from the library, and called directly
 * rather than through the PLT. */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(hidden)
#endif

/* ref.c: portable C, the reference every SIMD kernel is tested against */
kern_dequantize_fn kern_ref_dequantize_row_f32, kern_ref_dequantize_row_f16,
    kern_ref_dequantize_row_q8_0, kern_ref_dequantize_row_q4_0, kern_ref_dequantize_row_q4_1,
    kern_ref_dequantize_row_q5_0, kern_ref_dequantize_row_q5_1, kern_ref_dequantize_row_q4_k,
    kern_ref_dequantize_row_q5_k, kern_ref_dequantize_row_q6_k;
kern_matmul_fn kern_ref_matmul_f32, kern_ref_matmul_f16, kern_ref_matmul_q8_0, kern_ref_matmul_q4_0,
    kern_ref_matmul_q4_1, kern_ref_matmul_q5_0, kern_ref_matmul_q5_1, kern_ref_matmul_q4_k,
    kern_ref_matmul_q5_k, kern_ref_matmul_q6_k;
/* Q8_0 weights against float activations (kern_matmul_float; xq unused), per block d * (q . x) */
kern_matmul_fn kern_ref_matmul_float_q8_0;
kern_quantize_block_fn kern_ref_quantize_block, kern_ref_quantize_block_q8k;
kern_attend_head_fn kern_ref_attend;

#ifdef HAVE_X86_KERNELS
/* x86.c: AVX2 + FMA + F16C */
kern_matmul_fn kern_x86_matmul_f32_avx2, kern_x86_matmul_f16_avx2, kern_x86_matmul_q8_0_avx2,
    kern_x86_matmul_q4_0_avx2, kern_x86_matmul_q4_1_avx2, kern_x86_matmul_q5_0_avx2,
    kern_x86_matmul_q5_1_avx2, kern_x86_matmul_q4_k_avx2, kern_x86_matmul_q5_k_avx2,
    kern_x86_matmul_q6_k_avx2, kern_x86_matmul_float_q8_0_avx2;
kern_dequantize_fn kern_x86_dequantize_row_f16_avx2, kern_x86_dequantize_row_q4_k_avx2,
    kern_x86_dequantize_row_q5_k_avx2, kern_x86_dequantize_row_q6_k_avx2;
kern_quantize_block_fn kern_x86_quantize_block_avx2, kern_x86_quantize_block_q8k_avx2;
kern_attend_head_fn kern_x86_attend_avx2;
/* silu(g) * u in place over n values, n % 8 == 0 */
void kern_x86_swiglu_avx2(float *g, const float *u, int n);
/* gelu_tanh(g) * u in place over n values, n % 8 == 0 */
void kern_x86_geglu_avx2(float *g, const float *u, int n);
/* x86.c: AVX-512 F/BW/VL/VNNI (with AVX2 + FMA + F16C) */
kern_matmul_fn kern_x86_matmul_f32_avx512, kern_x86_matmul_f16_avx512, kern_x86_matmul_q8_0_avx512,
    kern_x86_matmul_q4_0_avx512, kern_x86_matmul_q4_1_avx512, kern_x86_matmul_q5_0_avx512,
    kern_x86_matmul_q5_1_avx512, kern_x86_matmul_q4_k_avx512, kern_x86_matmul_q5_k_avx512,
    kern_x86_matmul_q6_k_avx512, kern_x86_matmul_float_q8_0_avx512;
/* n_q query heads sharing a key/value head: kern_attend's arguments */
void kern_x86_attend_avx512(const float *q, int n_q, const kern_kv_run *runs, int n_runs, int kv_stride,
                            int n_pos, int head_dim, float scale, float *scores, float *out);
#endif

#ifdef HAVE_ARM_KERNELS
/* arm.c: NEON. One matmul kernel serves the float and 32-value types (it branches on the type per
 * row and block); the K-quants have one each. */
kern_matmul_fn kern_arm_matmul, kern_arm_matmul_q4_k, kern_arm_matmul_q5_k, kern_arm_matmul_q6_k,
    kern_arm_matmul_float_q8_0;
kern_dequantize_fn kern_arm_dequantize_row_q4_k, kern_arm_dequantize_row_q5_k,
    kern_arm_dequantize_row_q6_k;
kern_quantize_block_fn kern_arm_quantize_block, kern_arm_quantize_block_q8k;
kern_attend_head_fn kern_arm_attend;
#endif

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif

#endif
