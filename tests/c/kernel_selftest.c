/* kernel_selftest.c - every kernel family available on this CPU against the portable kernels,
 * for every weight type, at awkward sizes: matmuls within a tolerance, dequantized rows bit for bit. Built by `make check-arm` for aarch64 and run under
 * qemu (the pytest suite covers x86-64 through the Python extension). Exit status 0 = all agree. */
#include "../../csrc/pyllm.h"
#include "../../csrc/kernels/quants.h"
#include "../../csrc/team.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* float -> f16 bits, round to nearest (normal range only, enough for test data) */
static uint16_t half(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int exp = (int)((b >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = b & 0x7FFFFFu;
    if (exp <= 0) return (uint16_t)sign;
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    if (mant & 0x1000u) h++;
    return (uint16_t)h;
}

static void fill(int type, uint8_t *w, size_t bytes, unsigned *s) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(frand(s) * 127);
    if (type == PYLLM_TYPE_F32) {
        for (size_t i = 0; i < bytes / 4; i++) ((float *)w)[i] = frand(s);
    } else if (type == PYLLM_TYPE_F16) {
        for (size_t i = 0; i < bytes / 2; i++) ((uint16_t *)w)[i] = half(frand(s));
    } else if (type == PYLLM_TYPE_Q4_K || type == PYLLM_TYPE_Q5_K || type == PYLLM_TYPE_Q6_K) {
        /* every bit pattern of quants and sub-block scales, with sane f16 d (and dmin) */
        size_t bsize = pyllm_row_bytes(type, QK_K), at = type == PYLLM_TYPE_Q6_K ? bsize - 2 : 0;
        for (size_t b = 0; b + bsize <= bytes; b += bsize) {
            uint16_t d = half(0.001f + 0.002f * fabsf(frand(s))), dmin = half(0.002f * fabsf(frand(s)));
            memcpy(w + b + at, &d, 2);
            if (type != PYLLM_TYPE_Q6_K) memcpy(w + b + 2, &dmin, 2);
        }
    } else { /* sane f16 scales at the start of every block */
        size_t bsize = pyllm_row_bytes(type, 32); /* one block */
        for (size_t b = 0; b + bsize <= bytes; b += bsize) {
            uint16_t d = half(0.01f + 0.02f * fabsf(frand(s))), m = half(frand(s) * 0.1f);
            memcpy(w + b, &d, 2);
            if (type == PYLLM_TYPE_Q4_1 || type == PYLLM_TYPE_Q5_1) memcpy(w + b + 2, &m, 2);
        }
    }
}

static int is_kquant(int type) {
    return type == PYLLM_TYPE_Q4_K || type == PYLLM_TYPE_Q5_K || type == PYLLM_TYPE_Q6_K;
}

/* team_claim: every item of every loop goes to exactly one thread, loop after loop (some of them
 * empty) and job after job, whichever threads ask first. */
#define CLAIM_LOOPS 200
#define CLAIM_MAX_ITEMS 13
static atomic_int claim_counts[CLAIM_LOOPS][CLAIM_MAX_ITEMS];

static void claim_job(void *arg, int ith, int nth) {
    pyllm_team *team = arg;
    team_cursor cursor = {0};
    (void)nth;
    for (int l = 0; l < CLAIM_LOOPS; l++) {
        for (int i; (i = team_claim(team, &cursor, l % CLAIM_MAX_ITEMS)) >= 0;) {
            atomic_fetch_add(&claim_counts[l][i], 1);
            if ((i + ith) % 3 == 0)
                for (volatile int spin = 0; spin < 1000; spin++) {} /* uneven work: threads take turns */
        }
        team_barrier(team);
    }
}

static int check_team_claims(void) {
    int failures = 0;
    for (int n_threads = 1; n_threads <= 3; n_threads++) {
        pyllm_team *team;
        if (team_new(n_threads, &team)) return 1;
        for (int job = 0; job < 3; job++) {
            for (int l = 0; l < CLAIM_LOOPS; l++)
                for (int i = 0; i < CLAIM_MAX_ITEMS; i++) atomic_store(&claim_counts[l][i], 0);
            team_run(team, claim_job, team);
            for (int l = 0; l < CLAIM_LOOPS; l++)
                for (int i = 0; i < CLAIM_MAX_ITEMS; i++) {
                    int want = i < l % CLAIM_MAX_ITEMS, got = atomic_load(&claim_counts[l][i]);
                    if (got != want) {
                        printf("FAIL team_claim, %d threads, job %d, loop %d, item %d: claimed %d times\n",
                               n_threads, job, l, i, got);
                        failures++;
                    }
                }
        }
        team_free(team);
    }
    printf("team_claim: %s\n", failures ? "FAIL" : "ok");
    return failures;
}

int main(void) {
    const int types[] = {PYLLM_TYPE_F32, PYLLM_TYPE_F16, PYLLM_TYPE_Q8_0, PYLLM_TYPE_Q4_0, PYLLM_TYPE_Q4_1,
                         PYLLM_TYPE_Q5_0, PYLLM_TYPE_Q5_1, PYLLM_TYPE_Q4_K, PYLLM_TYPE_Q5_K,
                         PYLLM_TYPE_Q6_K};
    const int sizes[][3] = {{1, 32, 1}, {7, 64, 1}, {37, 96, 3}, {67, 576, 9}, {130, 160, 4}};
    /* the K-quants' rows are whole super-blocks of 256 */
    const int ksizes[][3] = {{1, 256, 1}, {7, 512, 2}, {37, 768, 3}, {67, 2304, 5}, {130, 256, 17}};
    int failures = check_team_claims();
    unsigned seed = 1;
    for (int isa = PYLLM_ISA_AVX2; isa <= PYLLM_ISA_AVX512; isa++) {
        if (!pyllm_isa_available(isa)) continue;
        printf("kernels: %s vs portable\n", pyllm_isa_name(isa));
        for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
            for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                const int *size = is_kquant(types[ti]) ? ksizes[si] : sizes[si];
                int rows = size[0], cols = size[1], n = size[2];
                size_t rb = pyllm_row_bytes(types[ti], cols);
                uint8_t *w = malloc(rows * rb);
                float *x = malloc(sizeof(float) * n * cols), *a = malloc(sizeof(float) * n * rows),
                      *b = malloc(sizeof(float) * n * rows);
                if (!w || !x || !a || !b) return 2;
                fill(types[ti], w, rows * rb, &seed);
                for (int i = 0; i < n * cols; i++) x[i] = frand(&seed);
                pyllm_tensor t = {types[ti], rows, cols, w};
                if (pyllm_matmul(PYLLM_ISA_PORTABLE, &t, x, n, a, 0, 2) || pyllm_matmul(isa, &t, x, n, b, 0, 2)) return 3;
                float worst = 0, scale = 1e-6f;
                for (int i = 0; i < n * rows; i++) {
                    worst = fmaxf(worst, fabsf(a[i] - b[i]));
                    scale = fmaxf(scale, fabsf(a[i]));
                }
                int ok = worst <= 1e-4f * scale * sqrtf((float)cols);
                /* against float activations (the classifier), where the type has such a kernel */
                float fworst = 0, fscale = 1e-6f;
                int fa = pyllm_matmul_float(PYLLM_ISA_PORTABLE, &t, x, n, a, 0, 2);
                if (fa == PYLLM_OK) {
                    if (pyllm_matmul_float(isa, &t, x, n, b, 0, 2)) return 3;
                    for (int i = 0; i < n * rows; i++) {
                        fworst = fmaxf(fworst, fabsf(a[i] - b[i]));
                        fscale = fmaxf(fscale, fabsf(a[i]));
                    }
                    if (fworst > 1e-5f * fscale * sqrtf((float)cols)) {
                        printf("FAIL type %d: float-activation matmul differs by %.3g of %.3g\n", types[ti],
                               fworst, fscale);
                        ok = 0;
                    }
                } else if (fa != PYLLM_ERR_TYPE) {
                    return 3;
                }
                /* dequantized rows (token embeddings): the same floats, bit for bit */
                float *da = malloc(sizeof(float) * cols), *db = malloc(sizeof(float) * cols);
                if (!da || !db) return 2;
                for (int r = 0; r < rows; r++) {
                    if (pyllm_dequantize_row(PYLLM_ISA_PORTABLE, types[ti], w + r * rb, da, cols) ||
                        pyllm_dequantize_row(isa, types[ti], w + r * rb, db, cols)) return 3;
                    if (memcmp(da, db, sizeof(float) * cols)) {
                        printf("FAIL type %d row %d: dequantized rows differ\n", types[ti], r);
                        ok = 0;
                        break;
                    }
                }
                free(da), free(db);
                failures += !ok;
                printf("%-4s type %d  %3d x %3d  n=%d  max diff %.3g of %.3g\n", ok ? "ok" : "FAIL", types[ti],
                       rows, cols, n, worst, scale);
                free(w), free(x), free(a), free(b);
            }
    }
    printf("%d failures\n", failures);
    return failures != 0;
}
