/* threads.h - the OpenMP team as the forward pass and the single-kernel calls see it: which thread
 * this is, how many run, and the barrier between steps (all of them plain C without OpenMP). */
#ifndef PYLLM_THREADS_H
#define PYLLM_THREADS_H

#ifdef _OPENMP
#include <omp.h>
#endif

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#define BARRIER _Pragma("omp barrier")

#endif
