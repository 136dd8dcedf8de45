/* SPDX-License-Identifier: MIT */
/* The frontend's life cycle, the per-request call state shared by every deferred answer,
 * and the view of topics publish uses (registry watcher plus own recent writes). */
#include "fe_int.h"

#include "msm/cdc_state.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "frontend"

/* ---- life cycle ---- */

static void fe_own_clear(fe_t *fe)
{
    for (size_t i = 0; i < fe->fe_nown; i++) {
        free(fe->fe_own[i].name);
        free(fe->fe_own[i].subject);
    }
    free(fe->fe_own);
    fe->fe_own = NULL;
    fe->fe_nown = 0;
}

static void fe_destroy(fe_t *fe)
{
    msm_registry_free(fe->fe_reg);
    fe_own_clear(fe);
    msm_redis_script_free(fe->fe_sub_check);
    msm_redis_script_free(fe->fe_stats);
    msm_redis_script_free(fe->fe_task_get);
    msm_redis_script_free(fe->fe_dlq_list);
    msm_redis_script_free(fe->fe_task_list);
    msm_redis_script_free(fe->fe_records_scan);
    msm_redis_script_free(fe->fe_held_scan);
    msm_redis_script_free(fe->fe_replay_read);
    msm_redis_script_free(fe->fe_replay_done);
    msm_redis_script_free(fe->fe_sr_lookup);
    msm_redis_script_free(fe->fe_sr_register);
    msm_redis_script_free(fe->fe_sr_version);
    msm_idem_free(fe->fe_idem);
    msm_redis_script_free(fe->fe_cdc_put);
    msm_redis_script_free(fe->fe_cdc_delete);
    msm_redis_script_free(fe->fe_cdc_notify);
    msm_redis_script_free(fe->fe_cdc_state_read);
    msm_cdc_state_free(fe->fe_cdc);
    msm_redis_script_free(fe->fe_sched_check);
    msm_redis_script_free(fe->fe_sched_delete);
    fe_schemas_changed(fe);
    msm_schema_store_free(fe->fe_schemas);
    msm_netpolicy_free(fe->fe_netpolicy);
    free(fe);
}

/* A reload already reflects every write this frontend made before it (same connection,
 * replies in order), so the own writes can be forgotten. */
static void on_registry_changed(msm_registry_t *reg, void *opaque)
{
    fe_t *fe = opaque;
    fe_own_clear(fe);
    fe_schemas_changed(fe); /* a subject may have a new latest version */
    msm_log(MSM_LOG_DEBUG, FAC, "registry: %zu topics, %zu subscriptions",
            msm_registry_topic_count(reg), msm_registry_sub_count(reg));
}

static void settings_defaults(fe_settings_t *s)
{
    if (!s->max_events)
        s->max_events = FE_DEFAULT_MAX_EVENTS;
    if (!s->max_event_bytes)
        s->max_event_bytes = FE_DEFAULT_MAX_EVENT_BYTES;
    if (!s->registry_poll_ms)
        s->registry_poll_ms = FE_DEFAULT_REGISTRY_POLL_MS;
    if (s->sub_partitions <= 0)
        s->sub_partitions = FE_DEFAULT_SUB_PARTITIONS;
    if (s->status_partitions <= 0)
        s->status_partitions = FE_DEFAULT_STATUS_PARTITIONS;
    if (!s->idempotency_window_ms)
        s->idempotency_window_ms = FE_DEFAULT_IDEMPOTENCY_WINDOW_MS;
}

static int metrics_setup(fe_t *fe)
{
    static const char *const topic_result[] = {"topic", "result", NULL};
    static const char *const result[] = {"result", NULL};
    msm_metrics_t *m = fe->fe_deps.metrics;
    int rc = msm_metrics_counter(m, "msm_frontend_publish_requests_total",
                                 "publish requests by topic and result", topic_result,
                                 &fe->fe_m_requests);
    if (rc == MSM_OK)
        rc = msm_metrics_counter(m, "msm_frontend_publish_events_total",
                                 "events in publish requests by topic and result", topic_result,
                                 &fe->fe_m_events);
    if (rc == MSM_OK)
        rc = msm_metrics_histogram(m, "msm_frontend_publish_latency_seconds",
                                   "publish request time until the answer, by result", result,
                                   NULL, 0, &fe->fe_m_latency);
    static const char *const source_result[] = {"source", "result", NULL};
    if (rc == MSM_OK)
        rc = msm_metrics_counter(m, "msm_frontend_cdc_changes_total",
                                 "CDC changes pushed, by source and result (published, "
                                 "duplicate, failed)", source_result, &fe->fe_m_cdc);
    return rc;
}

fe_t *fe_new(const fe_deps_t *deps, const fe_settings_t *settings, char *errbuf,
             size_t errbuf_size)
{
    fe_t *fe = calloc(1, sizeof(*fe));
    if (!fe) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    fe->fe_deps = *deps;
    if (settings)
        fe->fe_set = *settings;
    settings_defaults(&fe->fe_set);
    fe->fe_netpolicy = msm_netpolicy_new(fe->fe_set.allow_networks, fe->fe_set.deny_networks,
                                         errbuf, errbuf_size);
    fe->fe_set.allow_networks = fe->fe_set.deny_networks = NULL; /* not kept */
    if (!fe->fe_netpolicy) {
        free(fe);
        return NULL;
    }
    int rc = metrics_setup(fe);
    if (rc != MSM_OK) {
        snprintf(errbuf, errbuf_size, "metrics: %s", msm_err_str(rc));
        goto fail;
    }
    fe->fe_schemas = msm_schema_store_new(deps->redis, 0);
    fe->fe_cdc = msm_cdc_state_new(deps->redis, deps->stream, fe->fe_set.append_timeout_ms);
    if (!fe->fe_schemas || !fe->fe_cdc || fe_tasks_scripts(fe) != MSM_OK || fe_schema_scripts(fe) != MSM_OK ||
        fe_publish_scripts(fe) != MSM_OK || fe_cdc_scripts(fe) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    fe->fe_reg = msm_registry_new(deps->redis, fe->fe_set.registry_poll_ms, on_registry_changed,
                                  fe);
    if (!fe->fe_reg) {
        snprintf(errbuf, errbuf_size, "registry: out of memory");
        goto fail;
    }
    /* Last: the server cannot forget routes, so nothing may fail after them but them (and
     * then the process exits without serving). */
    if ((rc = fe_control_routes(fe)) != MSM_OK || (rc = fe_publish_routes(fe)) != MSM_OK ||
        (rc = fe_tasks_routes(fe)) != MSM_OK || (rc = fe_schema_routes(fe)) != MSM_OK ||
        (rc = fe_cdc_routes(fe)) != MSM_OK || (rc = fe_schedule_routes(fe)) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "routes: %s", msm_err_str(rc));
        goto fail;
    }
    return fe;
fail:
    fe_destroy(fe);
    return NULL;
}

void fe_free(fe_t *fe)
{
    if (!fe)
        return;
    /* The watcher goes now (it calls back into fe); calls in flight keep the rest. */
    msm_registry_free(fe->fe_reg);
    fe->fe_reg = NULL;
    fe->fe_closing = 1;
    if (fe->fe_inflight == 0)
        fe_destroy(fe);
}

int fe_ready(void *opaque, char *why, size_t n)
{
    fe_t *fe = opaque;
    if (!msm_redis_connected(fe->fe_deps.redis)) {
        snprintf(why, n, "redis not connected");
        return 0;
    }
    if (!fe->fe_reg || !msm_registry_loaded(fe->fe_reg)) {
        snprintf(why, n, "registry not loaded");
        return 0;
    }
    return 1;
}

void fe_stop(void *opaque)
{
    (void)opaque; /* the HTTP server stops accepting; in-flight publishes finish */
}

int fe_drained(void *opaque)
{
    return fe_inflight(opaque) == 0;
}

size_t fe_inflight(const fe_t *fe)
{
    return fe->fe_inflight;
}

int fe_registry_loaded(const fe_t *fe)
{
    return fe->fe_reg && msm_registry_loaded(fe->fe_reg);
}

/* ---- calls ---- */

static void on_call_cancel(msm_http_req_t *req, void *opaque)
{
    (void)req;
    fe_call_t *c = opaque;
    c->req = NULL; /* the server answers 503 itself; the call ends when its backend does */
}

void *fe_call_new(fe_t *fe, msm_http_req_t *req, size_t size)
{
    fe_call_t *c = calloc(1, size);
    if (!c)
        return NULL;
    c->fe = fe;
    c->req = req;
    msm_http_req_on_cancel(req, on_call_cancel, c);
    fe->fe_inflight++;
    return c;
}

void fe_call_end(fe_call_t *c)
{
    fe_t *fe = c->fe;
    if (c->cleanup)
        c->cleanup(c);
    free(c);
    if (--fe->fe_inflight == 0 && fe->fe_closing)
        fe_destroy(fe);
}

void fe_call_bytes(fe_call_t *c, int status, const char *content_type, const void *body,
                   size_t len)
{
    if (c->req) {
        msm_http_req_on_cancel(c->req, NULL, NULL);
        msm_http_respond(c->req, status, content_type, body, len);
        c->req = NULL;
    }
    fe_call_end(c);
}

void fe_call_json(fe_call_t *c, int status, json_t *body)
{
    if (c->req) {
        msm_http_req_on_cancel(c->req, NULL, NULL);
        msm_http_respond_json(c->req, status, body);
        c->req = NULL;
    } else {
        json_decref(body);
    }
    fe_call_end(c);
}

void fe_call_error(fe_call_t *c, int status, const char *code, const char *message,
                   json_t *details)
{
    if (c->req) {
        msm_http_req_on_cancel(c->req, NULL, NULL);
        msm_http_respond_error(c->req, status, code, message, details);
        c->req = NULL;
    } else {
        json_decref(details);
    }
    fe_call_end(c);
}

void fe_call_unavailable(fe_call_t *c, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "backend unavailable: %s", why ? why : "unknown error");
    fe_call_error(c, 503, "UNAVAILABLE", msg, NULL);
}

int fe_call_aborted(fe_call_t *c)
{
    if (!c->fe->fe_closing)
        return 0;
    fe_call_error(c, 503, "SHUTTING_DOWN", "the frontend is shutting down", NULL);
    return 1;
}

/* ---- helpers ---- */

void fe_not_found(msm_http_req_t *req, const char *what, const char *name)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s %s not found", what, name);
    msm_http_respond_error(req, 404, "NOT_FOUND", msg, NULL);
}

int fe_parse_body(msm_http_req_t *req, int allow_empty, json_t **out)
{
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    *out = NULL;
    if (len == 0 && allow_empty)
        return 0;
    msm_json_err_t e;
    msm_json_err_init(&e);
    *out = msm_json_parse(body, len, &e);
    if (!*out)
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
    msm_json_err_deinit(&e);
    return *out ? 0 : -1;
}

json_t *fe_reply_json(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_STRING)
        return NULL;
    return json_loadb(r->str, r->len, JSON_DECODE_ANY, NULL);
}

/* ---- topics as publish sees them ---- */

int fe_topic_lookup(const fe_t *fe, const char *name, const char **subject)
{
    /* Newest own write first: a PUT then DELETE of the same topic leaves the DELETE. */
    for (size_t i = fe->fe_nown; i-- > 0;) {
        if (strcmp(fe->fe_own[i].name, name) == 0) {
            *subject = fe->fe_own[i].subject;
            return fe->fe_own[i].present;
        }
    }
    const msm_topic_t *t = fe->fe_reg ? msm_registry_topic(fe->fe_reg, name) : NULL;
    *subject = t ? t->schema_subject : NULL;
    return t != NULL;
}

int fe_topic_exists(const fe_t *fe, const char *name)
{
    const char *subject;
    return fe_topic_lookup(fe, name, &subject);
}

void fe_topic_noted(fe_t *fe, const char *name, bool present, const char *subject)
{
    char *copy = strdup(name), *subject_copy = subject ? strdup(subject) : NULL;
    fe_own_write_t *own = realloc(fe->fe_own, (fe->fe_nown + 1) * sizeof(*own));
    if (!copy || !own || (subject && !subject_copy)) {
        /* Without the note a publish may see 404 until the next poll: refresh at once. */
        free(copy);
        free(subject_copy);
        if (own)
            fe->fe_own = own;
        if (fe->fe_reg)
            msm_registry_refresh(fe->fe_reg);
        return;
    }
    fe->fe_own = own;
    fe->fe_own[fe->fe_nown++] = (fe_own_write_t){copy, subject_copy, present};
    if (fe->fe_reg)
        msm_registry_refresh(fe->fe_reg);
}

/* ---- schemas ---- */

msm_schema_store_t *fe_schema_store(fe_t *fe)
{
    return fe->fe_schemas;
}

void fe_schemas_changed(fe_t *fe)
{
    for (size_t i = 0; i < fe->fe_nlatest; i++)
        free(fe->fe_latest[i].subject);
    free(fe->fe_latest);
    fe->fe_latest = NULL;
    fe->fe_nlatest = 0;
}

int fe_subject_latest(const fe_t *fe, const char *subject)
{
    for (size_t i = 0; i < fe->fe_nlatest; i++) {
        if (strcmp(fe->fe_latest[i].subject, subject) == 0)
            return fe->fe_latest[i].id;
    }
    return 0;
}

void fe_subject_latest_note(fe_t *fe, const char *subject, int id)
{
    for (size_t i = 0; i < fe->fe_nlatest; i++) {
        if (strcmp(fe->fe_latest[i].subject, subject) == 0) {
            fe->fe_latest[i].id = id;
            return;
        }
    }
    char *copy = strdup(subject);
    fe_subject_latest_t *l = realloc(fe->fe_latest, (fe->fe_nlatest + 1) * sizeof(*l));
    if (!copy || !l) { /* not remembered: the next publish reads it again */
        free(copy);
        if (l)
            fe->fe_latest = l;
        return;
    }
    fe->fe_latest = l;
    fe->fe_latest[fe->fe_nlatest++] = (fe_subject_latest_t){copy, id};
}
