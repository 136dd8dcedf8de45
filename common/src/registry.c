/* SPDX-License-Identifier: MIT */
/* Topics and subscriptions: validation, JSON, storage in Redis and the watcher. */
#include "msm/registry.h"
#include "msm/id.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/pem.h"
#include "msm/time.h"

#include <stdlib.h>
#include <string.h>

#define KEY_MAX 512

bool msm_name_valid(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n >= 1 && n <= MSM_NAME_MAX;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ---- topics ---- */

msm_topic_t *msm_topic_from_json(const char *name, const json_t *body, msm_json_err_t *e)
{
    static const char *const known[] = {"name", "schema_subject", "partitions", "created_ms",
                                        NULL};
    const char *subject = NULL, *given = NULL;
    int64_t partitions = 4, created = 0;
    if (body && !json_is_null(body)) {
        if (msm_json_expect_object(e, body) != MSM_OK)
            return NULL;
        msm_json_check_known(e, body, known);
        msm_json_get_strn(e, body, "schema_subject", MSM_JSON_NULLABLE, 255, &subject);
        msm_json_get_int(e, body, "partitions", MSM_JSON_OPTIONAL, 1, 256, &partitions);
        msm_json_get_str(e, body, "name", MSM_JSON_OPTIONAL, &given);
        msm_json_get_int(e, body, "created_ms", MSM_JSON_OPTIONAL, 0, INT64_MAX, &created);
        if (given && strcmp(given, name) != 0)
            msm_json_err_add(e, "name", "must match the name in the path");
    }
    if (!msm_name_valid(name))
        msm_json_err_add(e, "name", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_err_count(e))
        return NULL;
    msm_topic_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->name = strdup(name);
    t->schema_subject = dup_or_null(subject);
    t->partitions = (int)partitions;
    t->created_ms = created ? created : msm_time_unix_ms();
    if (!t->name || (subject && !t->schema_subject)) {
        msm_topic_free(t);
        return NULL;
    }
    return t;
}

json_t *msm_topic_to_json(const msm_topic_t *t)
{
    return json_pack("{s:s,s:s?,s:i,s:I}", "name", t->name, "schema_subject", t->schema_subject,
                     "partitions", t->partitions, "created_ms", (json_int_t)t->created_ms);
}

void msm_topic_free(msm_topic_t *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->schema_subject);
    free(t);
}

/* ---- subscriptions ---- */

/* An endpoint's "health": an active check every interval_ms (API.md). */
static void endpoint_health(msm_json_err_t *e, const json_t *ep, msm_health_t *h)
{
    static const char *const known[] = {"path", "interval_ms", "unhealthy_threshold",
                                        "healthy_threshold", NULL};
    json_t *o = NULL;
    int64_t interval = 5000, down = 3, up = 2;
    const char *path = "/healthz";
    if (msm_json_get_object(e, ep, "health", MSM_JSON_NULLABLE, &o) != MSM_OK || !o)
        return;
    msm_json_path_push_key(e, "health");
    msm_json_check_known(e, o, known);
    if (msm_json_get_strn(e, o, "path", 0, 1024, &path) == MSM_OK && path[0] != '/')
        msm_json_err_add(e, "path", "must start with /");
    msm_json_get_int(e, o, "interval_ms", 0, 100, 3600000, &interval);
    msm_json_get_int(e, o, "unhealthy_threshold", 0, 1, 100, &down);
    msm_json_get_int(e, o, "healthy_threshold", 0, 1, 100, &up);
    msm_json_path_pop(e);
    h->path = strdup(path);
    h->interval_ms = (int)interval;
    h->unhealthy_threshold = (int)down;
    h->healthy_threshold = (int)up;
}

static void sub_endpoints(msm_json_err_t *e, const json_t *arr, msm_sub_t *s)
{
    static const char *const known[] = {"url",     "zone",   "weight", "version",
                                        "health",  "max_concurrency", NULL};
    size_t n = json_array_size(arr);
    s->endpoints = calloc(n ? n : 1, sizeof(*s->endpoints));
    if (!s->endpoints)
        return;
    msm_json_path_push_key(e, "endpoints");
    for (size_t i = 0; i < n; i++) {
        const json_t *ep = json_array_get(arr, i);
        msm_json_path_push_index(e, i);
        const char *url = NULL, *zone = NULL, *version = NULL;
        int64_t weight = 1, cap = 0;
        msm_health_t health = {0};
        if (msm_json_expect_object(e, ep) == MSM_OK) {
            msm_json_check_known(e, ep, known);
            msm_json_get_strn(e, ep, "url", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, 2048, &url);
            msm_json_get_strn(e, ep, "zone", MSM_JSON_NULLABLE, 64, &zone);
            msm_json_get_int(e, ep, "weight", MSM_JSON_OPTIONAL, 1, 1000, &weight);
            msm_json_get_strn(e, ep, "version", MSM_JSON_NULLABLE, 64, &version);
            msm_json_get_int(e, ep, "max_concurrency", MSM_JSON_OPTIONAL, 1, 100000, &cap);
            endpoint_health(e, ep, &health);
            if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
                msm_json_err_add(e, "url", "must be an http:// or https:// URL");
        }
        msm_json_path_pop(e);
        if (url) {
            msm_endpoint_t *out = &s->endpoints[s->nendpoints++];
            out->url = strdup(url);
            out->zone = dup_or_null(zone);
            out->weight = (int)weight;
            out->version = dup_or_null(version);
            out->max_concurrency = (int)cap;
            out->health = health;
        } else {
            free(health.path);
        }
    }
    msm_json_path_pop(e);
}

static void sub_locality(msm_json_err_t *e, const json_t *arr, msm_sub_t *s)
{
    size_t n = json_array_size(arr);
    s->locality = calloc(n ? n : 1, sizeof(*s->locality));
    if (!s->locality)
        return;
    msm_json_path_push_key(e, "locality");
    for (size_t i = 0; i < n; i++) {
        const json_t *z = json_array_get(arr, i);
        if (!json_is_string(z)) {
            msm_json_path_push_index(e, i);
            msm_json_err_add(e, NULL, "must be a string");
            msm_json_path_pop(e);
            continue;
        }
        s->locality[s->nlocality++] = strdup(json_string_value(z));
    }
    msm_json_path_pop(e);
}

static void sub_retry(msm_json_err_t *e, const json_t *retry, msm_sub_t *s)
{
    static const char *const known[] = {"max_attempts", "min_backoff_ms", "max_backoff_ms",
                                        NULL};
    int64_t attempts = s->max_attempts;
    msm_json_path_push_key(e, "retry");
    if (msm_json_expect_object(e, retry) == MSM_OK) {
        msm_json_check_known(e, retry, known);
        msm_json_get_int(e, retry, "max_attempts", 0, 1, 1000, &attempts);
        msm_json_get_int(e, retry, "min_backoff_ms", 0, 0, 86400000, &s->min_backoff_ms);
        msm_json_get_int(e, retry, "max_backoff_ms", 0, 0, 86400000, &s->max_backoff_ms);
        if (s->max_backoff_ms < s->min_backoff_ms)
            msm_json_err_add(e, "max_backoff_ms", "must be >= min_backoff_ms");
    }
    msm_json_path_pop(e);
    s->max_attempts = (int)attempts;
}

#define CANARY_MIN_EVENTS_MAX 100000 /* the routers' windows hold this many outcomes at most */

/* "canary": its version must split the endpoints in two non-empty sides. */
static void sub_canary(msm_json_err_t *e, const json_t *o, msm_sub_t *s)
{
    static const char *const known[] = {"version", "share", "max_failure_ratio", "min_events",
                                        NULL};
    const char *version = NULL;
    double share = 0.1, ratio = 0.05;
    int64_t min_events = 200;
    msm_json_path_push_key(e, "canary");
    if (msm_json_expect_object(e, o) == MSM_OK) {
        msm_json_check_known(e, o, known);
        msm_json_get_strn(e, o, "version", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, 64,
                          &version);
        if (msm_json_get_double(e, o, "share", 0, 0, 1, &share) == MSM_OK && share <= 0)
            msm_json_err_add(e, "share", "must be > 0 and <= 1");
        msm_json_get_double(e, o, "max_failure_ratio", 0, 0, 1, &ratio);
        msm_json_get_int(e, o, "min_events", 0, 1, CANARY_MIN_EVENTS_MAX, &min_events);
    }
    size_t same = 0;
    for (size_t i = 0; version && i < s->nendpoints; i++)
        same += s->endpoints[i].version && strcmp(s->endpoints[i].version, version) == 0;
    if (version && same == 0)
        msm_json_err_add(e, "version", "no endpoint has version \"%s\"", version);
    else if (version && same == s->nendpoints)
        msm_json_err_add(e, "version", "every endpoint has version \"%s\": no baseline left",
                         version);
    msm_json_path_pop(e);
    s->canary.version = version ? strdup(version) : NULL;
    s->canary.share = share;
    s->canary.max_failure_ratio = ratio;
    s->canary.min_events = (int)min_events;
}

static int present(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

/* One PEM member of "push_tls": a string of at most MSM_PUSH_TLS_PEM_MAX holding a block
 * whose label ends with @p label. */
static void push_tls_pem(msm_json_err_t *e, const json_t *o, const char *key, const char *label,
                         char **out)
{
    const char *pem = NULL;
    if (msm_json_get_strn(e, o, key, MSM_JSON_NULLABLE | MSM_JSON_NONEMPTY,
                          MSM_PUSH_TLS_PEM_MAX, &pem) != MSM_OK || !pem)
        return;
    if (!msm_pem_has_block(pem, label))
        msm_json_err_add(e, key, "must hold a PEM block (-----BEGIN …%s----- … -----END …)",
                         label);
    else if (!(*out = strdup(pem)))
        msm_json_err_add(e, key, "out of memory"); /* never accepted and then left out */
}

/* "push_tls" is honoured on https:// only: on an http:// endpoint it would be ignored. */
static void push_tls_endpoints(msm_json_err_t *e, const msm_sub_t *s)
{
    for (size_t i = 0; i < s->nendpoints; i++) {
        if (strncmp(s->endpoints[i].url, "https://", 8) != 0) {
            msm_json_err_add(e, NULL,
                             "is used on https:// endpoints only: endpoints[%zu] is not one", i);
            return;
        }
    }
}

/* "push_tls": the CAs and client certificate of pushes (docs/security.md "Outbound TLS"). */
static void sub_push_tls(msm_json_err_t *e, const json_t *o, msm_sub_t *s)
{
    static const char *const known[] = {"ca_pem", "client_cert_pem", "client_key_pem", NULL};
    msm_push_tls_t *t = &s->push_tls;
    msm_json_path_push_key(e, "push_tls");
    if (msm_json_expect_object(e, o) == MSM_OK) {
        msm_json_check_known(e, o, known);
        push_tls_pem(e, o, "ca_pem", "CERTIFICATE", &t->ca_pem);
        push_tls_pem(e, o, "client_cert_pem", "CERTIFICATE", &t->client_cert_pem);
        push_tls_pem(e, o, "client_key_pem", "PRIVATE KEY", &t->client_key_pem);
        int cert = present(o, "client_cert_pem"), key = present(o, "client_key_pem");
        if (cert != key)
            msm_json_err_add(e, cert ? "client_key_pem" : "client_cert_pem", "is required with %s",
                             cert ? "client_cert_pem" : "client_key_pem");
        if (!cert && !key && !present(o, "ca_pem"))
            msm_json_err_add(e, NULL, "must name ca_pem, or client_cert_pem and client_key_pem");
        push_tls_endpoints(e, s);
    }
    msm_json_path_pop(e);
}

msm_sub_t *msm_sub_from_json(const char *name, const json_t *body, msm_json_err_t *e)
{
    static const char *const known[] = {
        "name", "topic", "endpoints", "filter", "ordered", "max_concurrency",
        "rate_limit_per_s", "timeout_ms", "priority", "delivery_format", "locality", "retry",
        "secret", "max_batch_events", "task_retention_ms", "paused", "created_ms",
        "fairness_key", "canary", "push_tls", NULL};
    if (msm_json_expect_object(e, body) != MSM_OK)
        return NULL;
    msm_sub_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_concurrency = 64;
    s->timeout_ms = 30000;
    s->priority = 5;
    s->max_attempts = 5;
    s->min_backoff_ms = 100;
    s->max_backoff_ms = 60000;
    s->task_retention_ms = 3600000;
    msm_json_check_known(e, body, known);
    const char *topic = NULL, *filter = NULL, *format = "native", *secret = NULL, *given = NULL;
    json_t *endpoints = NULL, *locality = NULL, *retry = NULL, *canary = NULL, *tls = NULL;
    int ordered = 0, paused = 0;
    int64_t batch_events = 1;
    int64_t conc = s->max_concurrency, timeout = s->timeout_ms, prio = s->priority, created = 0;
    msm_json_get_str(e, body, "name", 0, &given);
    if (given && strcmp(given, name) != 0)
        msm_json_err_add(e, "name", "must match the name in the path");
    if (msm_json_get_str(e, body, "topic", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &topic) ==
            MSM_OK &&
        !msm_name_valid(topic))
        msm_json_err_add(e, "topic", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_get_array(e, body, "endpoints", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY,
                           &endpoints) == MSM_OK &&
        endpoints)
        sub_endpoints(e, endpoints, s);
    if (msm_json_get_strn(e, body, "filter", MSM_JSON_NULLABLE, MSM_FILTER_TEXT_MAX, &filter) ==
            MSM_OK &&
        filter && *filter) {
        char why[192];
        if (!(s->filter_expr = msm_filter_parse(filter, why, sizeof(why), NULL)))
            msm_json_err_add(e, "filter", "%s", why);
    }
    msm_json_get_bool(e, body, "ordered", 0, &ordered);
    msm_json_get_int(e, body, "max_concurrency", 0, 1, 100000, &conc);
    msm_json_get_double(e, body, "rate_limit_per_s", 0, 0, 1e9, &s->rate_limit_per_s);
    msm_json_get_int(e, body, "timeout_ms", 0, 1, 3600000, &timeout);
    msm_json_get_int(e, body, "priority", 0, 0, 9, &prio);
    msm_json_get_int(e, body, "created_ms", 0, 0, INT64_MAX, &created);
    msm_json_get_int(e, body, "max_batch_events", 0, 1, 1000, &batch_events);
    msm_json_get_int(e, body, "task_retention_ms", 0, 1000, 30LL * 86400000,
                     &s->task_retention_ms);
    msm_json_get_bool(e, body, "paused", 0, &paused);
    if (msm_json_get_str(e, body, "delivery_format", 0, &format) == MSM_OK &&
        strcmp(format, "native") != 0 && strcmp(format, "json") != 0)
        msm_json_err_add(e, "delivery_format", "must be \"native\" or \"json\"");
    if (msm_json_get_array(e, body, "locality", MSM_JSON_NULLABLE, &locality) == MSM_OK &&
        locality)
        sub_locality(e, locality, s);
    if (msm_json_get_object(e, body, "retry", MSM_JSON_NULLABLE, &retry) == MSM_OK && retry)
        sub_retry(e, retry, s);
    if (msm_json_get_object(e, body, "canary", MSM_JSON_NULLABLE, &canary) == MSM_OK && canary)
        sub_canary(e, canary, s);
    if (msm_json_get_object(e, body, "push_tls", MSM_JSON_NULLABLE, &tls) == MSM_OK && tls)
        sub_push_tls(e, tls, s);
    msm_json_get_strn(e, body, "secret", MSM_JSON_NULLABLE, 1024, &secret);
    const char *fairness = NULL;
    msm_json_get_strn(e, body, "fairness_key", MSM_JSON_NULLABLE, 256, &fairness);
    if (!msm_name_valid(name))
        msm_json_err_add(e, "name", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_err_count(e)) {
        msm_sub_free(s);
        return NULL;
    }
    s->name = strdup(name);
    s->topic = strdup(topic);
    s->filter = filter && *filter ? strdup(filter) : NULL; /* "" is no filter, as in Pub/Sub */
    s->ordered = ordered;
    s->paused = paused;
    s->max_batch_events = (int)batch_events;
    s->max_concurrency = (int)conc;
    s->timeout_ms = (int)timeout;
    s->priority = (int)prio;
    s->delivery_format = strdup(format);
    s->secret = dup_or_null(secret);
    s->fairness_key = fairness && *fairness ? strdup(fairness) : NULL;
    s->created_ms = created ? created : msm_time_unix_ms();
    if (!s->name || !s->topic || !s->delivery_format || (s->filter_expr && !s->filter)) {
        msm_sub_free(s);
        return NULL;
    }
    return s;
}

/* Optional members only when given, so subscriptions that do not use them stay readable
 * by daemons that predate them. */
static json_t *endpoint_to_json(const msm_endpoint_t *ep)
{
    json_t *o = json_pack("{s:s,s:s?,s:i}", "url", ep->url, "zone", ep->zone, "weight",
                          ep->weight);
    if (o && ep->max_concurrency > 0)
        json_object_set_new(o, "max_concurrency", json_integer(ep->max_concurrency));
    if (o && ep->version)
        json_object_set_new(o, "version", json_string(ep->version));
    if (o && ep->health.path)
        json_object_set_new(o, "health",
                            json_pack("{s:s,s:i,s:i,s:i}", "path", ep->health.path,
                                      "interval_ms", ep->health.interval_ms,
                                      "unhealthy_threshold", ep->health.unhealthy_threshold,
                                      "healthy_threshold", ep->health.healthy_threshold));
    return o;
}

json_t *msm_sub_to_json(const msm_sub_t *s, bool with_secret)
{
    json_t *eps = json_array(), *loc = json_array();
    for (size_t i = 0; i < s->nendpoints; i++)
        json_array_append_new(eps, endpoint_to_json(&s->endpoints[i]));
    for (size_t i = 0; i < s->nlocality; i++)
        json_array_append_new(loc, json_string(s->locality[i]));
    json_t *o = json_pack(
        "{s:s,s:s,s:o,s:s?,s:b,s:i,s:f,s:i,s:i,s:s,s:o,s:{s:i,s:I,s:I},s:I}", "name", s->name,
        "topic", s->topic, "endpoints", eps, "filter", s->filter, "ordered", s->ordered,
        "max_concurrency", s->max_concurrency, "rate_limit_per_s", s->rate_limit_per_s,
        "timeout_ms", s->timeout_ms, "priority", s->priority, "delivery_format",
        s->delivery_format, "locality", loc, "retry", "max_attempts", s->max_attempts,
        "min_backoff_ms", (json_int_t)s->min_backoff_ms, "max_backoff_ms",
        (json_int_t)s->max_backoff_ms, "created_ms", (json_int_t)s->created_ms);
    if (o) {
        json_object_set_new(o, "max_batch_events", json_integer(s->max_batch_events));
        json_object_set_new(o, "task_retention_ms", json_integer(s->task_retention_ms));
        json_object_set_new(o, "paused", json_boolean(s->paused));
        /* Only when set: a subscription that does not use it stays readable by daemons
         * that predate it (a rolling upgrade). */
        if (s->fairness_key)
            json_object_set_new(o, "fairness_key", json_string(s->fairness_key));
        if (s->canary.version)
            json_object_set_new(o, "canary",
                                json_pack("{s:s,s:f,s:f,s:i}", "version", s->canary.version,
                                          "share", s->canary.share, "max_failure_ratio",
                                          s->canary.max_failure_ratio, "min_events",
                                          s->canary.min_events));
    }
    if (o && s->secret)
        json_object_set_new(o, "secret", json_string(s->secret));
    if (o && (s->push_tls.ca_pem || s->push_tls.client_cert_pem))
        json_object_set_new(o, "push_tls",
                            json_pack("{s:s*,s:s*,s:s*}", "ca_pem", s->push_tls.ca_pem,
                                      "client_cert_pem", s->push_tls.client_cert_pem,
                                      "client_key_pem", s->push_tls.client_key_pem));
    if (o && !with_secret)
        msm_sub_mask_secrets(o);
    return o;
}

static void mask_member(json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (v && !json_is_null(v))
        json_object_set_new(o, key, json_string("***"));
}

void msm_sub_mask_secrets(json_t *sub)
{
    mask_member(sub, "secret");
    mask_member(json_object_get(sub, "push_tls"), "client_key_pem");
}

void msm_sub_free(msm_sub_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nendpoints; i++) {
        free(s->endpoints[i].url);
        free(s->endpoints[i].zone);
        free(s->endpoints[i].version);
        free(s->endpoints[i].health.path);
    }
    for (size_t i = 0; i < s->nlocality; i++)
        free(s->locality[i]);
    free(s->endpoints);
    free(s->locality);
    free(s->name);
    free(s->topic);
    free(s->filter);
    free(s->fairness_key);
    free(s->canary.version);
    msm_filter_free(s->filter_expr);
    free(s->delivery_format);
    free(s->secret);
    free(s->push_tls.ca_pem);
    free(s->push_tls.client_cert_pem);
    free(s->push_tls.client_key_pem);
    free(s);
}

long long msm_task_bucket(const char *event_id)
{
    msm_id_t id;
    if (msm_id_parse(event_id, &id) == MSM_OK && msm_id_version(&id) == 7)
        return (long long)(msm_id_timestamp_ms(&id) / MSM_TASK_BUCKET_MS);
    return 0;
}

int msm_task_key(const msm_redis_t *r, char *buf, size_t n, const char *sub,
                 const char *event_id)
{
    return msm_redis_key(r, buf, n, MSM_KEY_TASK, sub, msm_task_bucket(event_id));
}

void msm_sub_count_enqueued(msm_redis_t *r, const char *sub, size_t n)
{
    char key[KEY_MAX], count[24];
    snprintf(count, sizeof(count), "%zu", n); /* hiredis' formats know no %zu */
    if (n && msm_redis_key(r, key, sizeof(key), MSM_KEY_STATS, sub) >= 0)
        msm_redis_command(r, NULL, NULL, "HINCRBY %s enqueued %s", key, count);
}

/* ---- writing ---- */

typedef struct {
    msm_registry_done_cb *cb;
    void *opaque;
} write_t;

static void on_written(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    write_t *w = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        w->cb(MSM_ERR_BACKEND, why, w->opaque);
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
        w->cb(MSM_ERR_NOTFOUND, "not found", w->opaque);
    else
        w->cb(MSM_OK, NULL, w->opaque);
    free(w);
}

/* KEYS: hash, version; ARGV: name [, json]. HSET or HDEL, then INCR: one atomic change. */
static const char WRITE_LUA[] =
    "local n\n"
    "if ARGV[2] then n = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) + 1\n"
    "else n = redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
    "if n > 0 then redis.call('INCR', KEYS[2]) end\n"
    "return n\n";

static int registry_write(msm_redis_t *r, const char *kind, const char *name, const char *json,
                          msm_registry_done_cb *cb, void *opaque)
{
    char hash[KEY_MAX], version[KEY_MAX];
    if (msm_redis_key(r, hash, sizeof(hash), "%s", kind) < 0 ||
        msm_redis_key(r, version, sizeof(version), "%s", MSM_KEY_VERSION) < 0)
        return MSM_ERR_TOOLARGE;
    write_t *w = malloc(sizeof(*w));
    if (!w)
        return MSM_ERR_NOMEM;
    *w = (write_t){cb, opaque};
    const char *argv[] = {"EVAL", WRITE_LUA, "2", hash, version, name, json};
    int rc = msm_redis_command_argv(r, on_written, w, json ? 7 : 6, argv, NULL);
    if (rc != MSM_OK)
        free(w);
    return rc;
}

int msm_registry_put(msm_redis_t *r, const char *kind, const char *name, const json_t *json,
                     msm_registry_done_cb *cb, void *opaque)
{
    char *text = msm_json_dump(json, NULL);
    if (!text)
        return MSM_ERR_NOMEM;
    int rc = registry_write(r, kind, name, text, cb, opaque);
    free(text);
    return rc;
}

int msm_registry_delete(msm_redis_t *r, const char *kind, const char *name,
                        msm_registry_done_cb *cb, void *opaque)
{
    return registry_write(r, kind, name, NULL, cb, opaque);
}

/* ---- watching ---- */

/* One msm_registry_sync() caller, queued until a check sent after its call completes. */
typedef struct sync_waiter_s {
    struct sync_waiter_s *next;
    msm_registry_synced_cb *cb;
    void *opaque;
} sync_waiter_t;

struct msm_registry_s {
    msm_redis_t *redis;
    uint32_t poll_ms;
    msm_registry_changed_cb *cb;
    void *opaque;
    msm_timer_t timer;
    int loaded;
    int legacy_checked; /* looked for the keys of msm 0.1's layout once */
    int polling;      /* a check (poll or reload) is in flight */
    int freed;        /* freed while a reply is pending: the reply frees */
    long long version;
    msm_topic_t **topics;
    size_t ntopics;
    msm_sub_t **subs;
    size_t nsubs;
    msm_schedule_t **schedules;
    size_t nschedules;
    msm_cdc_source_t **sources;
    size_t nsources;
    sync_waiter_t *checking;  /* answered by the check in flight */
    sync_waiter_t *waiting;   /* asked after it was sent: wait for the next check */
    sync_waiter_t **wait_end; /* where the next waiter is linked (FIFO) */
};

static void snapshot_free(msm_topic_t **topics, size_t nt, msm_sub_t **subs, size_t ns,
                          msm_schedule_t **schedules, size_t nsch, msm_cdc_source_t **sources,
                          size_t nc)
{
    for (size_t i = 0; i < nt; i++)
        msm_topic_free(topics[i]);
    for (size_t i = 0; i < ns; i++)
        msm_sub_free(subs[i]);
    for (size_t i = 0; i < nsch; i++)
        msm_schedule_free(schedules[i]);
    for (size_t i = 0; i < nc; i++)
        msm_cdc_source_free(sources[i]);
    free(topics);
    free(subs);
    free(schedules);
    free(sources);
}

static void registry_destroy(msm_registry_t *reg)
{
    snapshot_free(reg->topics, reg->ntopics, reg->subs, reg->nsubs, reg->schedules,
                  reg->nschedules, reg->sources, reg->nsources);
    free(reg);
}

static void arm(msm_registry_t *reg, uint32_t ms);

/* Answers every waiter of @p list with @p err. */
static void waiters_call(msm_registry_t *reg, sync_waiter_t *list, int err)
{
    while (list) {
        sync_waiter_t *w = list;
        list = w->next;
        w->cb(reg, err, w->opaque);
        free(w);
    }
}

/* The check in flight is over: its waiters are answered, and syncs asked meanwhile get a
 * check of their own (sent after theirs, so it sees every change committed before). */
static void check_done(msm_registry_t *reg, int err)
{
    sync_waiter_t *done = reg->checking;
    reg->checking = NULL;
    reg->polling = 0;
    arm(reg, reg->waiting ? 0 : reg->poll_ms);
    waiters_call(reg, done, err);
}

/* The kinds of object parse_all() reads. */
enum { KIND_TOPIC, KIND_SUB, KIND_SCHEDULE, KIND_CDC };

/* Parses one hash's HGETALL (name, json, name, json, ...) into objects; bad entries are
 * logged and skipped (the frontend validated them; a hand edit must not stop a daemon). */
static size_t parse_all(const redisReply *r, int kind, void **out)
{
    static const char *const what[] = {"topic", "subscription", "schedule", "CDC source"};
    size_t n = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *name = r->element[i]->str;
        msm_json_err_t e;
        msm_json_err_init(&e);
        json_t *j = msm_json_parse(r->element[i + 1]->str, r->element[i + 1]->len, &e);
        void *obj = NULL;
        if (j && kind == KIND_SCHEDULE)
            obj = msm_schedule_from_json(name, j, 1, &e);
        else if (j)
            obj = kind == KIND_SUB   ? (void *)msm_sub_from_json(name, j, &e)
                  : kind == KIND_CDC ? (void *)msm_cdc_source_from_json(name, j, &e)
                                     : (void *)msm_topic_from_json(name, j, &e);
        if (obj)
            out[n++] = obj;
        else
            msm_log(MSM_LOG_WARN, "registry", "skipping stored %s %s: %s", what[kind], name,
                    msm_json_err_message(&e));
        json_decref(j);
        msm_json_err_deinit(&e);
    }
    return n;
}

static void on_reload(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    msm_registry_t *reg = opaque;
    if (reg->freed) {
        registry_destroy(reg);
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    /* [version, HGETALL topics, HGETALL subs, HGETALL schedules, HGETALL cdc sources] */
    if (why || reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
        check_done(reg, MSM_ERR_BACKEND);
        return;
    }
    long long version = reply->element[0]->type == REDIS_REPLY_STRING
                            ? atoll(reply->element[0]->str)
                            : 0;
    const redisReply *rt = reply->element[1], *rs = reply->element[2], *rk = reply->element[3],
                     *rc = reply->element[4];
    msm_topic_t **topics = calloc(rt->elements / 2 + 1, sizeof(*topics));
    msm_sub_t **subs = calloc(rs->elements / 2 + 1, sizeof(*subs));
    msm_schedule_t **schedules = calloc(rk->elements / 2 + 1, sizeof(*schedules));
    msm_cdc_source_t **sources = calloc(rc->elements / 2 + 1, sizeof(*sources));
    if (!topics || !subs || !schedules || !sources) {
        free(topics);
        free(subs);
        free(schedules);
        free(sources);
        check_done(reg, MSM_ERR_NOMEM);
        return;
    }
    size_t nt = parse_all(rt, KIND_TOPIC, (void **)topics);
    size_t ns = parse_all(rs, KIND_SUB, (void **)subs);
    size_t nk = parse_all(rk, KIND_SCHEDULE, (void **)schedules);
    size_t nc = parse_all(rc, KIND_CDC, (void **)sources);
    msm_topic_t **old_topics = reg->topics;
    msm_sub_t **old_subs = reg->subs;
    msm_schedule_t **old_schedules = reg->schedules;
    msm_cdc_source_t **old_sources = reg->sources;
    size_t old_nt = reg->ntopics, old_ns = reg->nsubs, old_nk = reg->nschedules,
           old_nc = reg->nsources;
    reg->topics = topics;
    reg->ntopics = nt;
    reg->subs = subs;
    reg->nsubs = ns;
    reg->schedules = schedules;
    reg->nschedules = nk;
    reg->sources = sources;
    reg->nsources = nc;
    reg->version = version;
    reg->loaded = 1;
    if (reg->cb)
        reg->cb(reg, reg->opaque); /* still "polling": a free from here is deferred */
    snapshot_free(old_topics, old_nt, old_subs, old_ns, old_schedules, old_nk, old_sources,
                  old_nc);
    if (reg->freed) {
        registry_destroy(reg);
        return;
    }
    check_done(reg, MSM_OK); /* after the change callback: waiters see the new snapshot */
}

/* Version and the hashes in one script: a snapshot never mixes two versions. */
static const char RELOAD_LUA[] =
    "return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2]),"
    " redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),"
    " redis.call('HGETALL', KEYS[5])}";
/* The whole reload (version and the hashes in one script, by SHA): process-wide, never
 * freed, so a reply due after msm_registry_free() never meets a freed script. */
static int reload_send(msm_registry_t *reg)
{
    static msm_redis_script_t *reload_script;
    char kv[KEY_MAX], kt[KEY_MAX], ks[KEY_MAX], kk[KEY_MAX], kc[KEY_MAX];
    if (!reload_script && !(reload_script = msm_redis_script_new(RELOAD_LUA)))
        return MSM_ERR_NOMEM;
    msm_redis_key(reg->redis, kv, sizeof(kv), "%s", MSM_KEY_VERSION);
    msm_redis_key(reg->redis, kt, sizeof(kt), "%s", MSM_KEY_TOPICS);
    msm_redis_key(reg->redis, ks, sizeof(ks), "%s", MSM_KEY_SUBS);
    msm_redis_key(reg->redis, kk, sizeof(kk), "%s", MSM_KEY_SCHEDULES);
    msm_redis_key(reg->redis, kc, sizeof(kc), "%s", MSM_KEY_CDC_SOURCES);
    const char *argv[] = {kv, kt, ks, kk, kc};
    return msm_redis_eval(reg->redis, reload_script, on_reload, reg, 5, 5, argv, NULL);
}

/* The cheap check, a plain GET of the version (the scheduler checks before every batch):
 * the reload follows only when it moved. */
static void on_version(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    msm_registry_t *reg = opaque;
    if (reg->freed) {
        registry_destroy(reg);
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    if (why || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        check_done(reg, MSM_ERR_BACKEND);
        return;
    }
    long long version = reply->type == REDIS_REPLY_STRING ? atoll(reply->str) : 0;
    if (version == reg->version) {
        check_done(reg, MSM_OK);
        return;
    }
    int rc = reload_send(reg);
    if (rc != MSM_OK)
        check_done(reg, rc);
}

/* Keys of the layout before the {registry} hash tag: their topics and subscriptions would
 * look gone. Said loudly, once; scripts/migrate-registry-keys.sh moves them. */
static void on_legacy(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)opaque;
    if (!err && reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        msm_log(MSM_LOG_ERROR, "registry",
                "namespace %s holds registry keys of msm 0.1 (%s:topics, %s:subs, "
                "%s:schemas:*): they are not read any more; stop msm and run "
                "scripts/migrate-registry-keys.sh to move them under {registry}",
                msm_redis_namespace(r), msm_redis_namespace(r), msm_redis_namespace(r),
                msm_redis_namespace(r));
}

/* Sends the version check (the whole reload before the first load); the waiting syncs
 * become the ones this check answers. Its end re-arms the timer. */
static int check_send(msm_registry_t *reg)
{
    if (!reg->legacy_checked) {
        char kt[KEY_MAX], ks[KEY_MAX], kn[KEY_MAX];
        msm_redis_key(reg->redis, kt, sizeof(kt), "topics");
        msm_redis_key(reg->redis, ks, sizeof(ks), "subs");
        msm_redis_key(reg->redis, kn, sizeof(kn), "schemas:next_id");
        reg->legacy_checked = msm_redis_command(reg->redis, on_legacy, NULL, "EXISTS %s %s %s",
                                                kt, ks, kn) == MSM_OK;
    }
    char kv[KEY_MAX];
    msm_redis_key(reg->redis, kv, sizeof(kv), "%s", MSM_KEY_VERSION);
    int rc = reg->loaded ? msm_redis_command(reg->redis, on_version, reg, "GET %s", kv)
                         : reload_send(reg);
    if (rc != MSM_OK)
        return rc;
    reg->polling = 1;
    reg->checking = reg->waiting;
    reg->waiting = NULL;
    reg->wait_end = &reg->waiting;
    return MSM_OK;
}

static void on_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_registry_t *reg = opaque;
    if (reg->polling || check_send(reg) == MSM_OK)
        return;
    sync_waiter_t *failed = reg->waiting;
    reg->waiting = NULL;
    reg->wait_end = &reg->waiting;
    arm(reg, reg->poll_ms);
    waiters_call(reg, failed, MSM_ERR_BACKEND);
}

static void arm(msm_registry_t *reg, uint32_t ms)
{
    msm_loop_timer_start(msm_redis_loop(reg->redis), &reg->timer, ms, on_timer, reg);
}

msm_registry_t *msm_registry_new(msm_redis_t *r, uint32_t poll_ms, msm_registry_changed_cb *cb,
                                 void *opaque)
{
    msm_registry_t *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    reg->redis = r;
    reg->poll_ms = poll_ms ? poll_ms : 500;
    reg->cb = cb;
    reg->opaque = opaque;
    reg->wait_end = &reg->waiting;
    msm_timer_init(&reg->timer);
    arm(reg, 0);
    return reg;
}

void msm_registry_free(msm_registry_t *reg)
{
    if (!reg)
        return;
    msm_loop_timer_stop(msm_redis_loop(reg->redis), &reg->timer);
    /* Nobody may wait for a registry that is gone: answered now, before it goes. */
    sync_waiter_t *checking = reg->checking, *waiting = reg->waiting;
    reg->checking = reg->waiting = NULL;
    reg->wait_end = &reg->waiting;
    waiters_call(reg, checking, MSM_ERR_SHUTDOWN);
    waiters_call(reg, waiting, MSM_ERR_SHUTDOWN);
    if (reg->polling) {
        reg->freed = 1; /* the pending reply frees it */
        return;
    }
    registry_destroy(reg);
}

int msm_registry_loaded(const msm_registry_t *reg)
{
    return reg->loaded;
}

void msm_registry_refresh(msm_registry_t *reg)
{
    if (!reg->polling)
        arm(reg, 0);
}

int msm_registry_covers(const msm_registry_t *reg, int64_t version)
{
    return reg->loaded && version >= 0 && version <= reg->version;
}

int msm_registry_sync(msm_registry_t *reg, msm_registry_synced_cb *cb, void *opaque)
{
    sync_waiter_t *w = malloc(sizeof(*w));
    if (!w)
        return MSM_ERR_NOMEM;
    *w = (sync_waiter_t){NULL, cb, opaque};
    *reg->wait_end = w;
    reg->wait_end = &w->next;
    /* Sent on the next loop turn, so the syncs of this turn share it. A check in flight may
     * predate the caller's change: its end sends the next one. */
    if (!reg->polling)
        arm(reg, 0);
    return MSM_OK;
}

size_t msm_registry_topic_count(const msm_registry_t *reg)
{
    return reg->ntopics;
}

const msm_topic_t *msm_registry_topic_at(const msm_registry_t *reg, size_t i)
{
    return i < reg->ntopics ? reg->topics[i] : NULL;
}

const msm_topic_t *msm_registry_topic(const msm_registry_t *reg, const char *name)
{
    for (size_t i = 0; i < reg->ntopics; i++) {
        if (strcmp(reg->topics[i]->name, name) == 0)
            return reg->topics[i];
    }
    return NULL;
}

size_t msm_registry_sub_count(const msm_registry_t *reg)
{
    return reg->nsubs;
}

const msm_sub_t *msm_registry_sub_at(const msm_registry_t *reg, size_t i)
{
    return i < reg->nsubs ? reg->subs[i] : NULL;
}

const msm_sub_t *msm_registry_sub(const msm_registry_t *reg, const char *name)
{
    for (size_t i = 0; i < reg->nsubs; i++) {
        if (strcmp(reg->subs[i]->name, name) == 0)
            return reg->subs[i];
    }
    return NULL;
}

size_t msm_registry_schedule_count(const msm_registry_t *reg)
{
    return reg->nschedules;
}

const msm_schedule_t *msm_registry_schedule_at(const msm_registry_t *reg, size_t i)
{
    return i < reg->nschedules ? reg->schedules[i] : NULL;
}

size_t msm_registry_cdc_count(const msm_registry_t *reg)
{
    return reg->nsources;
}

const msm_cdc_source_t *msm_registry_cdc_at(const msm_registry_t *reg, size_t i)
{
    return i < reg->nsources ? reg->sources[i] : NULL;
}

const msm_cdc_source_t *msm_registry_cdc(const msm_registry_t *reg, const char *name)
{
    for (size_t i = 0; i < reg->nsources; i++) {
        if (strcmp(reg->sources[i]->name, name) == 0)
            return reg->sources[i];
    }
    return NULL;
}
