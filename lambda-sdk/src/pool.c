/* SPDX-License-Identifier: MIT */
/* Handler threads (pool.h). */
#include "pool.h"

#include "msm/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct {
    lm_job_t *q_head, *q_tail;
} queue_t;

struct lm_pool_s {
    msm_loop_t *p_loop;
    lm_pool_run_cb *p_run;
    lm_pool_done_cb *p_done;
    void *p_opaque;
    pthread_mutex_t p_mu;
    pthread_cond_t p_cv;
    queue_t p_todo, p_finished;
    int p_stop;
    unsigned p_busy; /* submitted and not yet handed back (loop thread only) */
    int p_efd;
    unsigned p_nthreads, p_started;
    pthread_t *p_threads;
    struct pool_arg {
        lm_pool_t *pool;
        unsigned index;
    } * p_args;
};

static void push(queue_t *q, lm_job_t *j)
{
    j->j_next = NULL;
    if (q->q_tail)
        q->q_tail->j_next = j;
    else
        q->q_head = j;
    q->q_tail = j;
}

static lm_job_t *take_all(queue_t *q)
{
    lm_job_t *j = q->q_head;
    q->q_head = q->q_tail = NULL;
    return j;
}

static void *worker(void *arg)
{
    struct pool_arg *a = arg;
    lm_pool_t *p = a->pool;
    pthread_mutex_lock(&p->p_mu);
    for (;;) {
        while (!p->p_todo.q_head && !p->p_stop)
            pthread_cond_wait(&p->p_cv, &p->p_mu);
        if (!p->p_todo.q_head)
            break;
        lm_job_t *j = p->p_todo.q_head;
        p->p_todo.q_head = j->j_next;
        if (!p->p_todo.q_head)
            p->p_todo.q_tail = NULL;
        pthread_mutex_unlock(&p->p_mu);
        j->j_result = p->p_run(j, a->index, p->p_opaque);
        pthread_mutex_lock(&p->p_mu);
        int was_empty = p->p_finished.q_head == NULL;
        push(&p->p_finished, j);
        if (was_empty) { /* one wake-up per batch of results */
            uint64_t one = 1;
            ssize_t rc = write(p->p_efd, &one, sizeof(one));
            (void)rc;
        }
    }
    pthread_mutex_unlock(&p->p_mu);
    return NULL;
}

static void on_finished(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop;
    (void)events;
    lm_pool_t *p = opaque;
    uint64_t v;
    ssize_t rc = read(fd, &v, sizeof(v));
    (void)rc;
    pthread_mutex_lock(&p->p_mu);
    lm_job_t *j = take_all(&p->p_finished);
    pthread_mutex_unlock(&p->p_mu);
    while (j) {
        lm_job_t *next = j->j_next;
        p->p_busy--;
        p->p_done(j, j->j_result, p->p_opaque);
        j = next;
    }
}

lm_pool_t *msm__pool_new(
    msm_loop_t *loop, unsigned nthreads, lm_pool_run_cb *run, lm_pool_done_cb *done, void *opaque)
{
    lm_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->p_loop = loop;
    p->p_run = run;
    p->p_done = done;
    p->p_opaque = opaque;
    p->p_nthreads = nthreads;
    p->p_efd = -1;
    pthread_mutex_init(&p->p_mu, NULL);
    pthread_cond_init(&p->p_cv, NULL);
    p->p_threads = calloc(nthreads, sizeof(*p->p_threads));
    p->p_args = calloc(nthreads, sizeof(*p->p_args));
    p->p_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!p->p_threads || !p->p_args || p->p_efd < 0 ||
        msm_loop_watch(loop, p->p_efd, MSM_LOOP_READ, on_finished, p) != MSM_OK)
        goto fail;
    for (unsigned i = 0; i < nthreads; i++) {
        p->p_args[i] = (struct pool_arg){p, i};
        int rc = pthread_create(&p->p_threads[i], NULL, worker, &p->p_args[i]);
        if (rc != 0) {
            errno = rc;
            goto fail;
        }
        p->p_started++;
    }
    return p;
fail:
    msm__pool_free(p, 1);
    return NULL;
}

void msm__pool_submit(lm_pool_t *p, lm_job_t *job)
{
    p->p_busy++;
    pthread_mutex_lock(&p->p_mu);
    push(&p->p_todo, job);
    pthread_cond_signal(&p->p_cv);
    pthread_mutex_unlock(&p->p_mu);
}

unsigned msm__pool_busy(const lm_pool_t *p)
{
    return p->p_busy;
}

void msm__pool_free(lm_pool_t *p, int wait)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->p_mu);
    p->p_stop = 1;
    pthread_cond_broadcast(&p->p_cv);
    pthread_mutex_unlock(&p->p_mu);
    if (p->p_efd >= 0)
        msm_loop_unwatch(p->p_loop, p->p_efd);
    if (!wait && p->p_busy > 0)
        return; /* a thread may still be in a handler: the process exit ends it */
    for (unsigned i = 0; i < p->p_started; i++)
        pthread_join(p->p_threads[i], NULL);
    if (p->p_efd >= 0)
        close(p->p_efd);
    pthread_mutex_destroy(&p->p_mu);
    pthread_cond_destroy(&p->p_cv);
    free(p->p_threads);
    free(p->p_args);
    free(p);
}
