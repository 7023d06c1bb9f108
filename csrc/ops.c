/* ops.c - the kernels on their own, outside a model: the kernel families this CPU can run, weight
 * row sizes, and single matmul, SwiGLU, GeGLU and dequantization calls with the forward pass's kernels,
 * exposed for tests and benchmarks.
 */
#include "pyllm.h"
#include "kernels/kernels.h"
#include "threads.h"

#include <limits.h>
#include <stdlib.h>

int pyllm_isa_best(void) { return kern_isa_best(); }
int pyllm_isa_available(int isa) { return kern_isa_available(isa); }
size_t pyllm_row_bytes(int type, int cols) { return kern_row_bytes(type, cols); }

const char *pyllm_isa_name(int isa) {
    switch (isa) {
    case PYLLM_ISA_PORTABLE: return "portable";
    case PYLLM_ISA_AVX2: return "avx2";
    case PYLLM_ISA_NEON: return "neon";
    case PYLLM_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

int pyllm_matmul(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                 int n_threads) {
    if (!w || !x || !y || !w->data || n < 1 || n_threads < 1 || w->rows < 1) return PYLLM_ERR_ARG;
    if (kern_row_bytes(w->type, w->cols) == 0) return PYLLM_ERR_TYPE;
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    const int act = kern_type_act(w->type);
    void *xq = NULL;
    if (act != KERN_ACT_F32) {
        xq = malloc((size_t)n * kern_act_row_bytes(act, w->cols));
        if (!xq) return PYLLM_ERR_NOMEM;
    }
    const kern_input in = {x, act == KERN_ACT_Q8X ? xq : NULL, act == KERN_ACT_Q8K ? xq : NULL};
#pragma omp parallel num_threads(n_threads)
    {
        const int ith = thread_id(), nth = thread_count();
        if (xq) kern_quantize_rows(isa, act, x, n, w->cols, xq, ith, nth);
        BARRIER;
        kern_matmul(isa, w, &in, n, y, accumulate != 0, ith, nth);
    }
    free(xq);
    return PYLLM_OK;
}

int pyllm_swiglu(int isa, float *gate, const float *up, int n, int cols, int n_threads) {
    if (!gate || !up || n < 1 || cols < 1 || n_threads < 1) return PYLLM_ERR_ARG;
    if (cols > INT_MAX - 7 || n > INT_MAX / ((cols + 7) / 8)) return PYLLM_ERR_ARG; /* kern_swiglu counts groups of 8 in int */
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
#pragma omp parallel num_threads(n_threads)
    kern_swiglu(isa, gate, up, n, cols, thread_id(), thread_count());
    return PYLLM_OK;
}

int pyllm_geglu(int isa, float *gate, const float *up, int n, int cols, int n_threads) {
    if (!gate || !up || n < 1 || cols < 1 || n_threads < 1) return PYLLM_ERR_ARG;
    if (cols > INT_MAX - 7 || n > INT_MAX / ((cols + 7) / 8)) return PYLLM_ERR_ARG; /* as pyllm_swiglu */
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
#pragma omp parallel num_threads(n_threads)
    kern_geglu(isa, gate, up, n, cols, thread_id(), thread_count());
    return PYLLM_OK;
}

int pyllm_dequantize_row(int isa, int type, const void *src, float *dst, int n) {
    if (!src || !dst || kern_row_bytes(type, n) == 0) return PYLLM_ERR_TYPE;
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    kern_dequantize_row(isa, type, src, dst, n);
    return PYLLM_OK;
}
