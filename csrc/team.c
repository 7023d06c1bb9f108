/* team.c - see team.h. POSIX threads and C11 atomics; on Windows the same interface over OpenMP. */
#define _POSIX_C_SOURCE 200809L
#include "team.h"

#include <stdlib.h>

#ifdef _WIN32
#include <omp.h>

struct pyllm_team {
    int n;
    int size;    /* threads OpenMP gave the current job */
    int claimed; /* claims made in the current job (team_claim) */
};

int team_new(int n_threads, pyllm_team **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return -1;
    (*out)->n = n_threads;
    return 0;
}

void team_run(pyllm_team *t, team_fn *fn, void *arg) {
    t->claimed = 0;
#pragma omp parallel num_threads(t->n)
    {
#pragma omp single
        t->size = omp_get_num_threads(); /* the single's barrier: every thread sees it */
        fn(arg, omp_get_thread_num(), omp_get_num_threads());
    }
}

void team_barrier(pyllm_team *t) {
    (void)t;
#pragma omp barrier
}

int team_claim(pyllm_team *t, team_cursor *c, int n_items) {
    int v;
#pragma omp atomic capture
    v = t->claimed++;
    if (v - c->base < n_items) return v - c->base;
    c->base += n_items + t->size; /* this thread's one claim past the end */
    return -1;
}

void team_free(pyllm_team *t) { free(t); }

#else
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* How long a thread spins before it sleeps. Between jobs: IDLE_SPINS pauses (about a millisecond;
 * the next token's pass usually comes sooner). At a barrier the team adapts its budget of pauses: a wait that
 * ends while spinning in the second half of the budget doubles it; a wait that outlasts it sleeps,
 * to be woken by the last thread to arrive, and then a short sleep (under SHORT_WAIT_NS: spinning on
 * would have been cheaper than the wake-up) doubles the budget, a long one (over LONG_WAIT_NS: the
 * thread waited for one that was not running, its core being shared with other work) halves it. On
 * idle cores waits are short and spinning wins; on busy ones sleeping leaves the core to the
 * thread that is late. */
#define IDLE_SPINS (1 << 16)
/* A spinning thread (at a barrier, or between jobs) yields the processor after every YIELD_SPINS
 * pauses (about 28 us). Where the threads share a core with other work (more runnable threads
 * than cores), the thread waited for may be queued behind this one on the same core: spinning
 * on would hold it back for the whole budget (SmolLM2 decoding beside one busy process: 22-28
 * tok/s without yields, 51-56 with them; llama.cpp 44-49). Where each thread has its own core, a
 * yield returns at once; yielding after every 256 pauses cost 2% there, after 1024 nothing. */
#define YIELD_SPINS (1 << 10)
#define MIN_BARRIER_SPINS (1 << 6)
#define MAX_BARRIER_SPINS (1 << 13)
#define SHORT_WAIT_NS 200000LL
#define LONG_WAIT_NS 2000000LL

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin number `spins` of a wait: a pause, and every YIELD_SPINS pauses a yield of the processor. */
static inline void spin_once(int spins) {
    cpu_relax();
    if (spins % YIELD_SPINS == YIELD_SPINS - 1) sched_yield();
}

typedef struct {
    pyllm_team *team;
    int ith;
} worker;

struct pyllm_team {
    int n;
    team_fn *fn;
    void *arg;
    atomic_int job;              /* incremented for each job (under mu: a sleeper cannot miss it) */
    atomic_int arrived;          /* threads at the current barrier */
    atomic_int passed;           /* barriers passed so far */
    atomic_int barrier_sleepers; /* threads asleep in a barrier */
    atomic_int spin_budget;      /* pauses a barrier wait spins before it sleeps */
    atomic_int claimed;          /* claims made in the current job (team_claim) */
    int quit, job_sleepers;      /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;         /* a job, or quit */
    pthread_cond_t passed_cv;    /* a barrier was passed */
    pthread_t *threads;
    worker *workers;
    int started;                 /* workers 1..started run (in process pid) */
    pid_t pid;
};

void team_barrier(pyllm_team *t) {
    if (t->n == 1) return;
    const int phase = atomic_load(&t->passed);
    if (atomic_fetch_add(&t->arrived, 1) == t->n - 1) { /* the last to arrive lets the others go */
        atomic_store(&t->arrived, 0);
        atomic_fetch_add(&t->passed, 1);
        if (atomic_load(&t->barrier_sleepers)) { /* read after passed moved: no sleeper is missed */
            pthread_mutex_lock(&t->mu);
            pthread_cond_broadcast(&t->passed_cv);
            pthread_mutex_unlock(&t->mu);
        }
        return;
    }
    const int budget = atomic_load_explicit(&t->spin_budget, memory_order_relaxed);
    for (int spins = 0; spins < budget; spins++) {
        if (atomic_load(&t->passed) != phase) {
            if (spins > budget / 2 && budget < MAX_BARRIER_SPINS)
                atomic_store_explicit(&t->spin_budget, 2 * budget, memory_order_relaxed);
            return;
        }
        spin_once(spins);
    }
    const long long slept_at = now_ns();
    pthread_mutex_lock(&t->mu);
    atomic_fetch_add(&t->barrier_sleepers, 1);
    while (atomic_load(&t->passed) == phase) pthread_cond_wait(&t->passed_cv, &t->mu);
    atomic_fetch_sub(&t->barrier_sleepers, 1);
    pthread_mutex_unlock(&t->mu);
    const long long slept = now_ns() - slept_at;
    if (slept < SHORT_WAIT_NS && budget < MAX_BARRIER_SPINS)
        atomic_store_explicit(&t->spin_budget, 2 * budget, memory_order_relaxed);
    else if (slept > LONG_WAIT_NS && budget > MIN_BARRIER_SPINS)
        atomic_store_explicit(&t->spin_budget, budget / 2, memory_order_relaxed);
}

static void *worker_main(void *arg) {
    const worker *w = arg;
    pyllm_team *t = w->team;
    int seen = 0;
    for (;;) {
        for (int spins = 0; atomic_load(&t->job) == seen && spins < IDLE_SPINS; spins++) spin_once(spins);
        if (atomic_load(&t->job) == seen) {
            pthread_mutex_lock(&t->mu);
            t->job_sleepers++;
            while (atomic_load(&t->job) == seen && !t->quit) pthread_cond_wait(&t->wake, &t->mu);
            t->job_sleepers--;
            const int quit = t->quit;
            pthread_mutex_unlock(&t->mu);
            if (quit) return NULL;
        }
        seen = atomic_load(&t->job);
        t->fn(t->arg, w->ith, t->n);
        team_barrier(t); /* the job's end: the caller returns once every thread is past it */
    }
}

/* Start workers 1..n-1 from a clean state (in a new team, or in a child after fork()). */
static int start_workers(pyllm_team *t) {
    atomic_init(&t->job, 0);
    atomic_init(&t->arrived, 0);
    atomic_init(&t->passed, 0);
    atomic_init(&t->barrier_sleepers, 0);
    atomic_init(&t->spin_budget, MAX_BARRIER_SPINS);
    atomic_init(&t->claimed, 0);
    t->quit = t->job_sleepers = t->started = 0;
    t->pid = getpid();
    for (int i = 1; i < t->n; i++) {
        t->workers[i] = (worker){t, i};
        if (pthread_create(&t->threads[i], NULL, worker_main, &t->workers[i])) return -1;
        t->started = i;
    }
    return 0;
}

/* In a child made by fork() the workers do not exist (fork copies only the calling thread), and
 * the locks may have been held by one of them: make both anew. 0, or -1 if that fails. */
static int after_fork(pyllm_team *t) {
    if (pthread_mutex_init(&t->mu, NULL) || pthread_cond_init(&t->wake, NULL) ||
        pthread_cond_init(&t->passed_cv, NULL)) {
        t->n = 1; /* the caller alone: no barrier to meet, no lock to take */
        t->started = 0;
        t->pid = getpid();
        return -1;
    }
    if (start_workers(t)) {
        t->n = t->started + 1; /* run with the workers that could be started */
        return -1;
    }
    return 0;
}

int team_new(int n_threads, pyllm_team **out) {
    *out = NULL;
    if (n_threads < 1) return -1;
    pyllm_team *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->n = n_threads;
    t->threads = calloc((size_t)n_threads, sizeof *t->threads);
    t->workers = calloc((size_t)n_threads, sizeof *t->workers);
    if (!t->threads || !t->workers) goto fail;
    if (pthread_mutex_init(&t->mu, NULL)) goto fail;
    if (pthread_cond_init(&t->wake, NULL)) goto fail_mu;
    if (pthread_cond_init(&t->passed_cv, NULL)) goto fail_wake;
    if (start_workers(t)) {
        team_free(t); /* stops the workers started so far */
        return -1;
    }
    *out = t;
    return 0;
fail_wake:
    pthread_cond_destroy(&t->wake);
fail_mu:
    pthread_mutex_destroy(&t->mu);
fail:
    free(t->threads);
    free(t->workers);
    free(t);
    return -1;
}

void team_run(pyllm_team *t, team_fn *fn, void *arg) {
    if (t->pid != getpid()) after_fork(t); /* on failure: fewer threads (at least the caller) */
    atomic_store(&t->claimed, 0); /* no thread is in a job: the last one ended at a barrier */
    if (t->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&t->mu);
    atomic_fetch_add(&t->job, 1);
    if (t->job_sleepers) pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
    fn(arg, 0, t->n);
    team_barrier(t);
}

int team_claim(pyllm_team *t, team_cursor *c, int n_items) {
    const int v = atomic_fetch_add(&t->claimed, 1) - c->base;
    if (v < n_items) return v;
    c->base += n_items + t->n; /* this thread's one claim past the end */
    return -1;
}

void team_free(pyllm_team *t) {
    if (!t) return;
    /* in a forked child that never ran a pass the workers and the locks are the parent's: leave them */
    if (t->pid == getpid()) {
        pthread_mutex_lock(&t->mu);
        t->quit = 1;
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->mu);
        for (int i = 1; i <= t->started; i++) pthread_join(t->threads[i], NULL);
        pthread_cond_destroy(&t->wake);
        pthread_cond_destroy(&t->passed_cv);
        pthread_mutex_destroy(&t->mu);
    }
    free(t->threads);
    free(t->workers);
    free(t);
}
#endif
