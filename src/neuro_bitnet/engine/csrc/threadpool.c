/* Persistent pthread pool. One job at a time; the caller takes part as thread 0.
 *
 * Every job is written so that any thread running it takes work items from a shared atomic
 * counter until none are left. So the caller never waits for a worker that has not started:
 * it revokes the worker's slot and finishes the job itself. That keeps a descheduled worker
 * (a busy, shared machine) from stalling each of the ~150 steps of a token.
 *
 * Memory ordering. A job is handed over through each worker's `slot`, not through `gen`:
 *   caller: writes fn, arg and the job's data; stores slot = POSTED (seq_cst, so release);
 *           bumps gen (the wake-up hint);
 *   worker: CAS slot POSTED -> RUNNING (seq_cst, so acquire): it now sees fn, arg and the job
 *           as the caller wrote them; runs the job; stores slot = IDLE (release);
 *   caller: waits until it reads slot == IDLE (acquire) or revokes it (CAS POSTED -> IDLE), so
 *           every write the worker made is visible when nb_pool_run returns.
 * gen only tells a worker that something may have been posted. A worker that was revoked and
 * is still spinning may see gen move past the job it missed; it then takes the next job by the
 * same CAS, whose acquire pairs with that job's POSTED store, so it never runs a job with a
 * stale fn or arg. Sleepers check gen under the mutex and the caller bumps it under the mutex,
 * so a wake-up cannot be lost between the check and the wait.
 */
#define _POSIX_C_SOURCE 200809L
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define nb_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define nb_cpu_relax() __asm__ __volatile__("yield")
#else
#define nb_cpu_relax() ((void)0)
#endif

/* Iterations a worker polls for the next job before sleeping on the condition variable. */
#define NB_SPIN_ITERS 20000

enum { SLOT_IDLE = 0, SLOT_POSTED = 1, SLOT_RUNNING = 2 };

typedef struct {
    nb_pool *pool;
    int ith;
    atomic_int slot;
} nb_worker;

struct nb_pool {
    int n;
    pthread_t *threads;
    nb_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;
    atomic_int stop;
    nb_task_fn fn;
    void *arg;
};

static void *worker_main(void *p) {
    nb_worker *w = p;
    nb_pool *pool = w->pool;
    unsigned seen = 0; /* gen at creation: a job may be posted before this thread runs */
    for (;;) {
        int got = 0;
        for (int i = 0; i < NB_SPIN_ITERS; i++) {
            if (atomic_load_explicit(&pool->gen, memory_order_acquire) != seen) {
                got = 1;
                break;
            }
            nb_cpu_relax();
        }
        if (!got) {
            pthread_mutex_lock(&pool->mu);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop)) break;
        seen = atomic_load(&pool->gen);
        /* The handover (see the top): success acquires fn, arg and the job; failure means the
         * caller revoked the slot and did the work itself. */
        int expected = SLOT_POSTED;
        if (atomic_compare_exchange_strong(&w->slot, &expected, SLOT_RUNNING)) {
            pool->fn(pool->arg, w->ith, pool->n);
            atomic_store_explicit(&w->slot, SLOT_IDLE, memory_order_release); /* publishes the job's writes */
        }
    }
    return NULL;
}

nb_pool *nb_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    nb_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) return NULL;
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->stop, 0);
    if (n_threads == 1) return pool;
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    pool->workers = calloc((size_t)n_threads, sizeof(nb_worker));
    if (!pool->threads || !pool->workers) goto fail;
    for (int i = 1; i < n_threads; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].ith = i;
        atomic_init(&pool->workers[i].slot, SLOT_IDLE);
        if (pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]) != 0) {
            pool->n = i; /* join only the started ones */
            goto fail;
        }
    }
    return pool;
fail:
    nb_pool_destroy(pool);
    return NULL;
}

void nb_pool_destroy(nb_pool *pool) {
    if (!pool) return;
    if (pool->threads) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->stop, 1);
        atomic_fetch_add(&pool->gen, 1);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
        for (int i = 1; i < pool->n; i++) pthread_join(pool->threads[i], NULL);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

int nb_pool_size(const nb_pool *pool) { return pool->n; }

void nb_pool_run(nb_pool *pool, nb_task_fn fn, void *arg) {
    if (pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    /* Plain writes, published by the seq_cst (release) POSTED stores after them. */
    pool->fn = fn;
    pool->arg = arg;
    for (int i = 1; i < pool->n; i++) atomic_store(&pool->workers[i].slot, SLOT_POSTED);
    /* The hint: under the mutex, so a worker about to sleep either sees it or gets the signal. */
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    fn(arg, 0, pool->n);
    /* Each worker's slot ends IDLE again, by us (revoked: it never started) or by the worker (its
     * release store, read here with acquire: its outputs are visible from here on). */
    for (int i = 1; i < pool->n; i++) {
        int expected = SLOT_POSTED;
        if (atomic_compare_exchange_strong(&pool->workers[i].slot, &expected, SLOT_IDLE))
            continue; /* never started: the work is already done */
        for (unsigned k = 0; atomic_load_explicit(&pool->workers[i].slot, memory_order_acquire) != SLOT_IDLE; k++) {
            if (k < 20000)
                nb_cpu_relax();
            else
                sched_yield(); /* the worker was descheduled mid-item: let it run */
        }
    }
}
