/* team.h - the threads one pass runs on, and the barrier between its steps.
 *
 * Each sequence and paged cache owns a team of n_threads: the calling thread, which takes part as
 * thread 0, and n_threads - 1 workers of its own. A job runs fn(arg, ith, nth) on all of them and
 * returns when all have finished. Workers wait for the next job spinning for a short while (the
 * next token usually comes within it), then asleep; at a barrier they spin, yielding the core once
 * a wait grows long (another program may hold it). A team belongs to its sequence, so any number of
 * threads may use a model in turn, or several sequences at once, without their waits depending on
 * each other (OpenMP keeps a team per calling thread, and once its idle teams outnumber the cores
 * every barrier sleeps: decoding ran 2.4x slower on two cores after a second thread had run a
 * model).
 */
#ifndef PYLLM_TEAM_H
#define PYLLM_TEAM_H

typedef struct pyllm_team pyllm_team;
typedef void team_fn(void *arg, int ith, int nth);

/* A team of n_threads >= 1 (its workers start here) in *out; -1 if memory or threads run out. */
int team_new(int n_threads, pyllm_team **out);

/* Run fn on every thread of the team, the caller as thread 0; one job at a time per team. */
void team_run(pyllm_team *t, team_fn *fn, void *arg);

/* Wait until every thread of the team's job has reached this barrier. */
void team_barrier(pyllm_team *t);

/* A thread's place in the dynamically shared loops of one job; each thread starts a job with {0}. */
typedef struct {
    int base; /* the team's claim count where this thread's current loop began */
} team_cursor;

/* The next item (0 .. n_items - 1) of a loop whose items go to whichever thread asks first, or -1
 * when none is left. Every thread of the job runs each such loop until it gets -1, and a barrier
 * separates one loop from the next: then each loop takes exactly n_items + nth claims, and every
 * thread knows where the next one starts without a reset. */
int team_claim(pyllm_team *t, team_cursor *c, int n_items);

/* Stop the workers and free the team (no job running). NULL is ignored. */
void team_free(pyllm_team *t);

#endif
