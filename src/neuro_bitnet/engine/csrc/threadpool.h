/* A persistent thread pool: n threads including the caller; workers spin briefly, then sleep. */
#ifndef NB_THREADPOOL_H
#define NB_THREADPOOL_H

typedef void (*nb_task_fn)(void *arg, int ith, int nth);
typedef struct nb_pool nb_pool;

/* Starts n_threads - 1 workers. Returns NULL on failure. */
nb_pool *nb_pool_create(int n_threads);
void nb_pool_destroy(nb_pool *pool);
int nb_pool_size(const nb_pool *pool);
/* Runs fn(arg, ith, nth) on every thread (the caller is ith 0) and returns when all are done. */
void nb_pool_run(nb_pool *pool, nb_task_fn fn, void *arg);

#endif
