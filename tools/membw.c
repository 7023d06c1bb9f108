/* membw.c - memory read bandwidth of this machine, the ceiling for decoding (every weight is read
 * once per token). Sums a 256 MiB buffer with AVX2 loads on 1 and 2 OpenMP threads; best of 5.
 * The buffer asks for transparent huge pages (Linux), as pyllm's weights do: in 4 KB pages the
 * same loop reads a quarter less here.
 *
 *     gcc -O2 -mavx2 -fopenmp tools/membw.c -o membw && ./membw
 */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

int main(void) {
    const size_t n = (size_t)256 << 20;
    char *buf = aligned_alloc((size_t)2 << 20, n);
    if (!buf) {
        fprintf(stderr, "membw: cannot allocate %zu bytes\n", n);
        return 1;
    }
#ifdef MADV_HUGEPAGE
    madvise(buf, n, MADV_HUGEPAGE);
#endif
    for (size_t i = 0; i < n; i++) buf[i] = (char)i;
    for (int threads = 1; threads <= 2; threads++) {
        double best = 0.0;
        long long check = 0;
        for (int rep = 0; rep < 5; rep++) {
            double t = omp_get_wtime();
            long long total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
            {
                __m256i acc = _mm256_setzero_si256();
#pragma omp for
                for (size_t i = 0; i < n; i += 64) {
                    acc = _mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(buf + i)));
                    acc = _mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(buf + i + 32)));
                }
                total += _mm256_extract_epi64(acc, 0) + _mm256_extract_epi64(acc, 1) +
                         _mm256_extract_epi64(acc, 2) + _mm256_extract_epi64(acc, 3);
            }
            t = omp_get_wtime() - t;
            if (n / t / 1e9 > best) best = n / t / 1e9;
            check ^= total;
        }
        printf("%d thread%s: %.1f GB/s (checksum %lld)\n", threads, threads > 1 ? "s" : "", best, check);
    }
    free(buf);
    return 0;
}
