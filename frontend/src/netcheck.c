/* SPDX-License-Identifier: MIT */
/* Endpoint addresses at PUT subscription: the host of every endpoint URL is judged against
 * the netpolicy the router will apply when it connects (router.allow_networks /
 * deny_networks), so a subscription the router would refuse is refused up front. IP
 * literals are judged at once; host names are resolved with getaddrinfo on a short-lived
 * thread of their own (it runs once per PUT, rarely), and the loop waits for it at most
 * FE_RESOLVE_TIMEOUT_MS: a name that has not resolved by then is refused, and the thread
 * finishes on its own and frees what it still holds.
 *
 * Threading: fe_netcheck_start() and the callback run on the loop's thread; the resolver
 * thread only touches its own copy of the policy, the host names and their verdicts. */
#include "fe_int.h"

#include "msm/err.h"
#include "msm/http_client.h"
#include "msm/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define FAC "control"

typedef struct {
    char *host;  /* a name the thread resolves; NULL when judged on the loop */
    int refused; /* the reason is in why (the thread writes both for names) */
    char why[384];
} nc_ep_t;

typedef struct {
    atomic_int refs;         /* the loop side and the thread */
    atomic_size_t done;      /* names the thread has judged, in the order of names[] */
    int efd;                 /* the thread's "done" signal to the loop */
    msm_netpolicy_t *policy; /* own copy: the thread may outlive the frontend */
    nc_ep_t *eps;
    size_t n;
    size_t *names; /* indexes into eps[] of the host names, in resolving order */
    size_t nnames;
    msm_loop_t *loop;
    msm_timer_t timer;
    fe_netcheck_cb *cb;
    void *opaque;
} nc_job_t;

static void job_free(nc_job_t *j)
{
    for (size_t i = 0; i < j->n && j->eps; i++)
        free(j->eps[i].host);
    free(j->eps);
    free(j->names);
    msm_netpolicy_free(j->policy);
    if (j->efd >= 0)
        close(j->efd);
    free(j);
}

static void job_release(nc_job_t *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        job_free(j);
}

static void *resolve_main(void *opaque)
{
    nc_job_t *j = opaque;
    for (size_t k = 0; k < j->nnames; k++) {
        nc_ep_t *ep = &j->eps[j->names[k]];
        ep->refused =
            msm_netpolicy_check_host(j->policy, ep->host, ep->why, sizeof(ep->why)) != MSM_OK;
        atomic_store_explicit(&j->done, k + 1, memory_order_release);
    }
    uint64_t one = 1;
    if (write(j->efd, &one, sizeof(one)) < 0) {
        /* The loop's timer ends the wait anyway. */
    }
    job_release(j);
    return NULL;
}

/* On the loop: every endpoint's verdict to the callback, then the loop side's reference. */
static void finish(nc_job_t *j)
{
    if (j->efd >= 0 && j->nnames)
        msm_loop_unwatch(j->loop, j->efd);
    msm_loop_timer_stop(j->loop, &j->timer);
    /* Names past `done` may still be written by the thread: not read here. */
    size_t done = j->nnames ? atomic_load_explicit(&j->done, memory_order_acquire) : 0;
    size_t k = 0;
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_json_path_push_key(&e, "endpoints");
    for (size_t i = 0; i < j->n; i++) {
        const nc_ep_t *ep = &j->eps[i];
        const char *why = NULL;
        char late[600];
        if (ep->host && k++ >= done) {
            snprintf(late, sizeof(late), "host %s did not resolve within %d ms", ep->host,
                     FE_RESOLVE_TIMEOUT_MS);
            why = late;
        } else if (ep->refused) {
            why = ep->why;
        }
        if (why) {
            msm_json_path_push_index(&e, i);
            msm_json_err_add(&e, "url", "%s", why);
            msm_json_path_pop(&e);
        }
    }
    msm_json_path_pop(&e);
    j->cb(j->opaque, &e);
    msm_json_err_deinit(&e);
    job_release(j);
}

static void on_resolved(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop;
    (void)fd;
    (void)events;
    finish(opaque);
}

static void on_timeout(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    nc_job_t *j = opaque;
    msm_log(MSM_LOG_WARN, FAC, "endpoint host names not resolved within %d ms",
            FE_RESOLVE_TIMEOUT_MS);
    finish(j);
}

/* Judges IP literals now and lists the host names for the thread. */
static int judge_literals(fe_t *fe, const msm_sub_t *s, nc_job_t *j)
{
    for (size_t i = 0; i < s->nendpoints; i++) {
        nc_ep_t *ep = &j->eps[i];
        char host[512];
        int rc = msm_http_url_host(s->endpoints[i].url, host, sizeof(host));
        if (rc == MSM_ERR_NOMEM)
            return rc;
        if (rc != MSM_OK) {
            ep->refused = 1;
            snprintf(ep->why, sizeof(ep->why), "has no host name or address");
            continue;
        }
        rc = msm_netpolicy_check_ip(fe->fe_netpolicy, host, ep->why, sizeof(ep->why));
        if (rc == MSM_ERR_INVALID) {
            ep->why[0] = '\0';
            if (!(ep->host = strdup(host)))
                return MSM_ERR_NOMEM;
            j->names[j->nnames++] = i;
        } else {
            ep->refused = rc != MSM_OK;
        }
    }
    return MSM_OK;
}

int fe_netcheck_start(fe_t *fe, const msm_sub_t *s, fe_netcheck_cb *cb, void *opaque)
{
    nc_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return MSM_ERR_NOMEM;
    j->efd = -1;
    j->n = s->nendpoints;
    j->loop = fe->fe_deps.loop;
    j->cb = cb;
    j->opaque = opaque;
    msm_timer_init(&j->timer);
    atomic_init(&j->refs, 1);
    atomic_init(&j->done, 0);
    j->eps = calloc(j->n ? j->n : 1, sizeof(*j->eps));
    j->names = calloc(j->n ? j->n : 1, sizeof(*j->names));
    int rc = j->eps && j->names ? judge_literals(fe, s, j) : MSM_ERR_NOMEM;
    if (rc != MSM_OK)
        goto fail;
    if (j->nnames == 0) {
        finish(j);
        return MSM_OK;
    }
    rc = MSM_ERR_NOMEM;
    if (!(j->policy = msm_netpolicy_dup(fe->fe_netpolicy)))
        goto fail;
    rc = MSM_ERR_IO;
    if ((j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        goto fail;
    if (msm_loop_watch(j->loop, j->efd, MSM_LOOP_READ, on_resolved, j) != MSM_OK)
        goto fail;
    pthread_attr_t attr;
    pthread_t tid;
    if (pthread_attr_init(&attr) != 0) {
        msm_loop_unwatch(j->loop, j->efd);
        goto fail;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    atomic_store(&j->refs, 2);
    int prc = pthread_create(&tid, &attr, resolve_main, j);
    pthread_attr_destroy(&attr);
    if (prc != 0) {
        msm_loop_unwatch(j->loop, j->efd);
        goto fail;
    }
    msm_loop_timer_start(j->loop, &j->timer, FE_RESOLVE_TIMEOUT_MS, on_timeout, j);
    return MSM_OK;
fail:
    job_free(j);
    return rc;
}
