/* A persistent thread pool: n threads including the caller; workers spin briefly, then sleep. */
#ifndef NB_THREADPOOL_H
#define NB_THREADPOOL_H

#include <stdatomic.h>

typedef void (*nb_task_fn)(void *arg, int ith, int nth);
typedef struct nb_pool nb_pool;

/* Starts n_threads - 1 workers. Returns NULL on failure. */
nb_pool *nb_pool_create(int n_threads);
void nb_pool_destroy(nb_pool *pool);
int nb_pool_size(const nb_pool *pool);
/* Runs fn(arg, ith, nth) on every thread (the caller is ith 0) and returns when all are done. */
void nb_pool_run(nb_pool *pool, nb_task_fn fn, void *arg);

/* How every job hands out its work: the next n items of the job's counter (returns the first).
 * Relaxed: the counter only has to give each item to one thread. What the items write reaches
 * the caller through the pool's handover (threadpool.c), as the job itself reaches the workers. */
static inline int nb_claim(atomic_int *next, int n) {
    return atomic_fetch_add_explicit(next, n, memory_order_relaxed);
}

#endif
