/* ops.c - the kernels on their own, outside a model: the kernel families this CPU can run, weight
 * row sizes, and single matmul, SwiGLU, GeGLU and dequantization calls with the forward pass's kernels,
 * exposed for tests and benchmarks.
 */
#include "pyllm.h"
#include "kernels/kernels.h"
#include "team.h"

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

/* fn on a team of n_threads made for this one call (these calls are for tests and benchmarks); the
 * team is stored in *team for the job's barriers. */
static int run_on_team(int n_threads, team_fn *fn, void *arg, pyllm_team **team) {
    if (team_new(n_threads, team)) return PYLLM_ERR_NOMEM;
    team_run(*team, fn, arg);
    team_free(*team);
    return PYLLM_OK;
}

typedef struct {
    int isa;
    const pyllm_tensor *w;
    const kern_input *in;
    const float *x;
    void *xq;
    int act, n, accumulate;
    float *y;
    pyllm_team *team;
    int float_acts; /* kern_matmul_float: x as it is */
} matmul_job;

static void matmul_thread(void *arg, int ith, int nth) {
    const matmul_job *j = arg;
    if (j->xq) kern_quantize_rows(j->isa, j->act, j->x, j->n, j->w->cols, j->xq, ith, nth);
    team_barrier(j->team);
    if (j->float_acts) kern_matmul_float(j->isa, j->w, j->x, j->n, j->y, j->accumulate, ith, nth);
    else kern_matmul(j->isa, j->w, j->in, j->n, j->y, j->accumulate, ith, nth);
}

typedef struct {
    int isa, gelu;
    float *gate;
    const float *up;
    int n, cols;
} gated_job;

static void gated_thread(void *arg, int ith, int nth) {
    const gated_job *j = arg;
    if (j->gelu) kern_geglu(j->isa, j->gate, j->up, j->n, j->cols, ith, nth);
    else kern_swiglu(j->isa, j->gate, j->up, j->n, j->cols, ith, nth);
}

/* pyllm_matmul and pyllm_matmul_float: x quantized on the fly into the activations the weight type
 * multiplies against, or with float_acts multiplied as it is (kern_matmul_float). */
static int matmul_on_team(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                          int n_threads, int float_acts) {
    if (!w || !x || !y || !w->data || n < 1 || n_threads < 1 || w->rows < 1) return PYLLM_ERR_ARG;
    if (kern_row_bytes(w->type, w->cols) == 0) return PYLLM_ERR_TYPE;
    if (float_acts && !kern_type_float_matmul(w->type)) return PYLLM_ERR_TYPE;
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    const int act = float_acts ? KERN_ACT_F32 : kern_type_act(w->type);
    void *xq = NULL;
    if (act != KERN_ACT_F32) {
        xq = malloc((size_t)n * kern_act_row_bytes(act, w->cols));
        if (!xq) return PYLLM_ERR_NOMEM;
    }
    const kern_input in = {x, act == KERN_ACT_Q8X ? xq : NULL, act == KERN_ACT_Q8K ? xq : NULL};
    matmul_job job = {isa, w, &in, x, xq, act, n, accumulate != 0, y, NULL, float_acts};
    int err = run_on_team(n_threads, matmul_thread, &job, &job.team);
    free(xq);
    return err;
}

int pyllm_matmul(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                 int n_threads) {
    return matmul_on_team(isa, w, x, n, y, accumulate, n_threads, 0);
}

int pyllm_matmul_float(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                       int n_threads) {
    return matmul_on_team(isa, w, x, n, y, accumulate, n_threads, 1);
}

int pyllm_swiglu(int isa, float *gate, const float *up, int n, int cols, int n_threads) {
    if (!gate || !up || n < 1 || cols < 1 || n_threads < 1) return PYLLM_ERR_ARG;
    if (cols > INT_MAX - 7 || n > INT_MAX / ((cols + 7) / 8)) return PYLLM_ERR_ARG; /* kern_swiglu counts groups of 8 in int */
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    gated_job job = {isa, 0, gate, up, n, cols};
    pyllm_team *team;
    return run_on_team(n_threads, gated_thread, &job, &team);
}

int pyllm_geglu(int isa, float *gate, const float *up, int n, int cols, int n_threads) {
    if (!gate || !up || n < 1 || cols < 1 || n_threads < 1) return PYLLM_ERR_ARG;
    if (cols > INT_MAX - 7 || n > INT_MAX / ((cols + 7) / 8)) return PYLLM_ERR_ARG; /* as pyllm_swiglu */
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    gated_job job = {isa, 1, gate, up, n, cols};
    pyllm_team *team;
    return run_on_team(n_threads, gated_thread, &job, &team);
}

int pyllm_dequantize_row(int isa, int type, const void *src, float *dst, int n) {
    if (!src || !dst || kern_row_bytes(type, n) == 0) return PYLLM_ERR_TYPE;
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    kern_dequantize_row(isa, type, src, dst, n);
    return PYLLM_OK;
}
