/* dispatch.c - which kernel runs: the kernel families this CPU can run, the weight types' traits
 * table, the activation formats' table, and each step's choice of kernel by family (enum
 * pyllm_isa) and weight type.
 *
 * A weight type is one row of type_traits, which names the activation format it multiplies
 * against (a row of act_traits: block size and quantizer); a SIMD family that has no kernel for a
 * type leaves its entry NULL and runs the reference kernel. A kernel is chosen once per matmul call (a
 * thread's whole share of it), never per row or block.
 */
#include "arch.h"

#include <math.h>
#include <stddef.h>

#ifdef HAVE_X86_KERNELS
#define X86(kernel) kernel
#else
#define X86(kernel) NULL
#endif
#ifdef HAVE_ARM_KERNELS
#define ARM(kernel) kernel
#else
#define ARM(kernel) NULL
#endif

/* ------------------------------------------------------------------------------------------ */
/* Weight types */

struct kern_type_traits {
    int blck_size;                          /* values per block (1 for float types); 0: no such type */
    size_t type_size;                       /* bytes per block */
    enum kern_act act;                      /* the activations the type multiplies against */
    kern_dequantize_fn *dequantize_row[KERN_ISA_COUNT]; /* a row as floats (token embeddings) */
    kern_matmul_fn *matmul[KERN_ISA_COUNT]; /* by enum pyllm_isa; NULL: the reference kernel */
    kern_matmul_fn *matmul_float[KERN_ISA_COUNT]; /* against unquantized activations
                                                     (kern_matmul_float); all NULL: none */
};

/* AVX-512 runs the AVX2 code where it has none of its own (every AVX-512 CPU runs AVX2). */
static const struct kern_type_traits type_traits[] = {
    [PYLLM_TYPE_F32] = {
        .blck_size = 1, .type_size = sizeof(float), .act = KERN_ACT_F32,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_f32},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_f32,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_f32_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_f32_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
        .matmul_float = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_f32,
                         [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_f32_avx2),
                         [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_f32_avx512),
                         [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_F16] = {
        .blck_size = 1, .type_size = sizeof(uint16_t), .act = KERN_ACT_F32,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_f16,
                           [PYLLM_ISA_AVX2] = X86(kern_x86_dequantize_row_f16_avx2),
                           [PYLLM_ISA_AVX512] = X86(kern_x86_dequantize_row_f16_avx2)},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_f16,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_f16_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_f16_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
        .matmul_float = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_f16,
                         [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_f16_avx2),
                         [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_f16_avx512),
                         [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_Q4_0] = {
        .blck_size = QK4_0, .type_size = sizeof(block_q4_0), .act = KERN_ACT_Q8X,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q4_0},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q4_0,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q4_0_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q4_0_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_Q4_1] = {
        .blck_size = QK4_1, .type_size = sizeof(block_q4_1), .act = KERN_ACT_Q8X,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q4_1},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q4_1,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q4_1_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q4_1_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_Q5_0] = {
        .blck_size = QK5_0, .type_size = sizeof(block_q5_0), .act = KERN_ACT_Q8X,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q5_0},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q5_0,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q5_0_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q5_0_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_Q5_1] = {
        .blck_size = QK5_1, .type_size = sizeof(block_q5_1), .act = KERN_ACT_Q8X,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q5_1},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q5_1,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q5_1_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q5_1_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
    },
    [PYLLM_TYPE_Q8_0] = {
        .blck_size = QK8_0, .type_size = sizeof(block_q8_0), .act = KERN_ACT_Q8X,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q8_0},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q8_0,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q8_0_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q8_0_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul)},
        .matmul_float = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_float_q8_0,
                         [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_float_q8_0_avx2),
                         [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_float_q8_0_avx512),
                         [PYLLM_ISA_NEON] = ARM(kern_arm_matmul_float_q8_0)},
    },
    [PYLLM_TYPE_Q4_K] = {
        .blck_size = QK_K, .type_size = sizeof(block_q4_K), .act = KERN_ACT_Q8K,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q4_k,
                           [PYLLM_ISA_AVX2] = X86(kern_x86_dequantize_row_q4_k_avx2),
                           [PYLLM_ISA_AVX512] = X86(kern_x86_dequantize_row_q4_k_avx2),
                           [PYLLM_ISA_NEON] = ARM(kern_arm_dequantize_row_q4_k)},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q4_k,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q4_k_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q4_k_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul_q4_k)},
    },
    [PYLLM_TYPE_Q5_K] = {
        .blck_size = QK_K, .type_size = sizeof(block_q5_K), .act = KERN_ACT_Q8K,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q5_k,
                           [PYLLM_ISA_AVX2] = X86(kern_x86_dequantize_row_q5_k_avx2),
                           [PYLLM_ISA_AVX512] = X86(kern_x86_dequantize_row_q5_k_avx2),
                           [PYLLM_ISA_NEON] = ARM(kern_arm_dequantize_row_q5_k)},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q5_k,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q5_k_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q5_k_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul_q5_k)},
    },
    [PYLLM_TYPE_Q6_K] = {
        .blck_size = QK_K, .type_size = sizeof(block_q6_K), .act = KERN_ACT_Q8K,
        .dequantize_row = {[PYLLM_ISA_PORTABLE] = kern_ref_dequantize_row_q6_k,
                           [PYLLM_ISA_AVX2] = X86(kern_x86_dequantize_row_q6_k_avx2),
                           [PYLLM_ISA_AVX512] = X86(kern_x86_dequantize_row_q6_k_avx2),
                           [PYLLM_ISA_NEON] = ARM(kern_arm_dequantize_row_q6_k)},
        .matmul = {[PYLLM_ISA_PORTABLE] = kern_ref_matmul_q6_k,
                   [PYLLM_ISA_AVX2] = X86(kern_x86_matmul_q6_k_avx2),
                   [PYLLM_ISA_AVX512] = X86(kern_x86_matmul_q6_k_avx512),
                   [PYLLM_ISA_NEON] = ARM(kern_arm_matmul_q6_k)},
    },
};

/* The traits of a weight type, or NULL if the type is unknown. */
static const struct kern_type_traits *traits_of(int type) {
    if (type < 0 || (size_t)type >= sizeof type_traits / sizeof *type_traits) return NULL;
    return type_traits[type].blck_size ? &type_traits[type] : NULL;
}

/* The kernel of family isa in a table row, or the portable one where the family has none. */
#define KERNEL_OF(table, isa) \
    ((isa) >= 0 && (isa) < KERN_ISA_COUNT && (table)[isa] ? (table)[isa] : (table)[PYLLM_ISA_PORTABLE])

int kern_type_act(int type) {
    const struct kern_type_traits *t = traits_of(type);
    return t ? (int)t->act : -1;
}

size_t kern_row_bytes(int type, int cols) {
    const struct kern_type_traits *t = traits_of(type);
    if (!t || cols <= 0 || cols % t->blck_size) return 0;
    return (size_t)(cols / t->blck_size) * t->type_size;
}

void kern_dequantize_row(int isa, int type, const void *src, float *dst, int n) {
    const struct kern_type_traits *t = traits_of(type);
    if (t) KERNEL_OF(t->dequantize_row, isa)(src, dst, n);
}

/* ------------------------------------------------------------------------------------------ */
/* Activation formats */

struct kern_act_traits {
    int blck_size;                                   /* values per block */
    size_t type_size;                                /* bytes per block */
    kern_quantize_block_fn *quantize[KERN_ISA_COUNT]; /* one block; NULL: the reference */
};

static const struct kern_act_traits act_traits[KERN_ACT_COUNT] = {
    [KERN_ACT_Q8X] = {
        .blck_size = QK8X, .type_size = sizeof(block_q8x),
        .quantize = {[PYLLM_ISA_PORTABLE] = kern_ref_quantize_block,
                     [PYLLM_ISA_AVX2] = X86(kern_x86_quantize_block_avx2),
                     [PYLLM_ISA_AVX512] = X86(kern_x86_quantize_block_avx2),
                     [PYLLM_ISA_NEON] = ARM(kern_arm_quantize_block)},
    },
    [KERN_ACT_Q8K] = {
        .blck_size = QK_K, .type_size = sizeof(block_q8k),
        .quantize = {[PYLLM_ISA_PORTABLE] = kern_ref_quantize_block_q8k,
                     [PYLLM_ISA_AVX2] = X86(kern_x86_quantize_block_q8k_avx2),
                     [PYLLM_ISA_AVX512] = X86(kern_x86_quantize_block_q8k_avx2),
                     [PYLLM_ISA_NEON] = ARM(kern_arm_quantize_block_q8k)},
    },
};

size_t kern_act_row_bytes(int act, int cols) {
    if (act <= KERN_ACT_F32 || act >= KERN_ACT_COUNT || cols <= 0 || cols % act_traits[act].blck_size)
        return 0;
    return (size_t)(cols / act_traits[act].blck_size) * act_traits[act].type_size;
}

/* ------------------------------------------------------------------------------------------ */
/* Kernel families */

int kern_isa_available(int isa) {
    switch (isa) {
    case PYLLM_ISA_PORTABLE: return 1;
#ifdef HAVE_X86_KERNELS
    case PYLLM_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case PYLLM_ISA_AVX512:
        return kern_isa_available(PYLLM_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#ifdef HAVE_ARM_KERNELS
    case PYLLM_ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

int kern_isa_best(void) {
    if (kern_isa_available(PYLLM_ISA_AVX512)) return PYLLM_ISA_AVX512;
    if (kern_isa_available(PYLLM_ISA_AVX2)) return PYLLM_ISA_AVX2;
    if (kern_isa_available(PYLLM_ISA_NEON)) return PYLLM_ISA_NEON;
    return PYLLM_ISA_PORTABLE;
}

/* ------------------------------------------------------------------------------------------ */
/* The steps */

/* The [lo, hi) share of n items for thread ith of nth, in chunks that are multiples of align. */
static void thread_share(int n, int ith, int nth, int align, int *lo, int *hi) {
    int chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    *lo = ith * chunk < n ? ith * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

void kern_matmul(int isa, const pyllm_tensor *w, const kern_input *in, int n, float *y,
                 int accumulate, int ith, int nth) {
    int r0, r1;
    thread_share(w->rows, ith, nth, 4, &r0, &r1);
    kern_matmul_rows(isa, w, in, n, y, accumulate, r0, r1);
}

void kern_matmul_rows(int isa, const pyllm_tensor *w, const kern_input *in, int n, float *y,
                      int accumulate, int r0, int r1) {
    const struct kern_type_traits *t = traits_of(w->type);
    if (!t || r0 >= r1) return;
    const void *xq = t->act == KERN_ACT_Q8X ? (const void *)in->q8x
                   : t->act == KERN_ACT_Q8K ? (const void *)in->q8k : NULL;
    KERNEL_OF(t->matmul, isa)(w, r0, r1, in->x, xq, n, y, accumulate);
}

int kern_type_float_matmul(int type) {
    const struct kern_type_traits *t = traits_of(type);
    return t && t->matmul_float[PYLLM_ISA_PORTABLE];
}

void kern_matmul_float(int isa, const pyllm_tensor *w, const float *x, int n, float *y,
                       int accumulate, int ith, int nth) {
    int r0, r1;
    thread_share(w->rows, ith, nth, 4, &r0, &r1);
    kern_matmul_float_rows(isa, w, x, n, y, accumulate, r0, r1);
}

void kern_matmul_float_rows(int isa, const pyllm_tensor *w, const float *x, int n, float *y,
                            int accumulate, int r0, int r1) {
    const struct kern_type_traits *t = traits_of(w->type);
    if (!t || !t->matmul_float[PYLLM_ISA_PORTABLE] || r0 >= r1) return;
    KERNEL_OF(t->matmul_float, isa)(w, r0, r1, x, NULL, n, y, accumulate);
}

void kern_quantize_rows(int isa, int act, const float *x, int n, int cols, void *out, int ith, int nth) {
    if (act <= KERN_ACT_F32 || act >= KERN_ACT_COUNT) return;
    const struct kern_act_traits *a = &act_traits[act];
    kern_quantize_block_fn *quantize = KERNEL_OF(a->quantize, isa);
    int lo, hi;
    thread_share(n * (cols / a->blck_size), ith, nth, 1, &lo, &hi);
    for (int b = lo; b < hi; b++)
        quantize(x + (size_t)b * a->blck_size, (uint8_t *)out + (size_t)b * a->type_size);
}

/* The gated activations and attention do not depend on the weight type: each family's kernel is
 * picked right here. */

static float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* gelu_tanh(g) * u as g / (1 + exp(-2y)) * u: the operations of avx2_geglu8, one value */
static float gelu_times(float g, float u) {
    float arg = -1.59576912f * (g + 0.044715f * (g * g * g)); /* -2 sqrt(2/pi) (g + 0.044715 g^3) */
    return g / (1.0f + expf(arg < 89.0f ? arg : 89.0f)) * u;
}

/* The gated activation of SwiGLU or GeGLU over thread ith's share of n rows. Groups of 8 values of
 * a row go through the SIMD code, the rest of a row (cols % 8) through the scalar function: which
 * one an element takes depends on its column alone, never on the thread split. */
static void gated(int isa, int gelu, float *gate, const float *up, int n, int cols, int ith, int nth) {
    const int groups = (cols + 7) / 8;
    int lo, hi;
    thread_share(n * groups, ith, nth, 1, &lo, &hi);
    while (lo < hi) {
        int t = lo / groups, g0 = lo % groups, g1 = hi - t * groups < groups ? hi - t * groups : groups;
        float *g = gate + (size_t)t * cols;
        const float *u = up + (size_t)t * cols;
        int c = g0 * 8, end = g1 * 8 < cols ? g1 * 8 : cols;
#ifdef HAVE_X86_KERNELS
        if (isa == PYLLM_ISA_AVX2 || isa == PYLLM_ISA_AVX512) {
            int full = (end - c) / 8 * 8;
            if (gelu) kern_x86_geglu_avx2(g + c, u + c, full);
            else kern_x86_swiglu_avx2(g + c, u + c, full);
            c += full;
        }
#endif
        (void)isa;
        for (; c < end; c++) g[c] = gelu ? gelu_times(g[c], u[c]) : silu_times(g[c], u[c]);
        lo = t * groups + g1;
    }
}

void kern_swiglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth) {
    gated(isa, 0, gate, up, n, cols, ith, nth);
}

void kern_geglu(int isa, float *gate, const float *up, int n, int cols, int ith, int nth) {
    gated(isa, 1, gate, up, n, cols, ith, nth);
}

void kern_attend(int isa, const float *q, int n_q, const kern_kv_run *runs, int n_runs, int kv_stride,
                 int n_pos, int head_dim, float scale, float *scores, float *out) {
#ifdef HAVE_X86_KERNELS
    if (isa == PYLLM_ISA_AVX512) {
        kern_x86_attend_avx512(q, n_q, runs, n_runs, kv_stride, n_pos, head_dim, scale, scores, out);
        return;
    }
#endif
    for (int g = 0; g < n_q; g++) {
        const float *qg = q + (size_t)g * head_dim;
        float *og = out + (size_t)g * head_dim;
#ifdef HAVE_X86_KERNELS
        if (isa == PYLLM_ISA_AVX2) { kern_x86_attend_avx2(qg, runs, n_runs, kv_stride, n_pos, head_dim, scale, scores, og); continue; }
#endif
#ifdef HAVE_ARM_KERNELS
        if (isa == PYLLM_ISA_NEON) { kern_arm_attend(qg, runs, n_runs, kv_stride, n_pos, head_dim, scale, scores, og); continue; }
#endif
        kern_ref_attend(qg, runs, n_runs, kv_stride, n_pos, head_dim, scale, scores, og);
    }
}
