/* SPDX-License-Identifier: MIT */
/* Topics, subscriptions (and schedules in the snapshot): validation with field paths, defaults, JSON round trip, and the
 * store + watcher pair against a real redis-server. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static msm_test_redis_t srv;

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    CU_ASSERT_PTR_NOT_NULL(j);
    return j;
}

static void test_names(void)
{
    CU_ASSERT_TRUE(msm_name_valid("orders"));
    CU_ASSERT_TRUE(msm_name_valid("a.b-c_D9"));
    CU_ASSERT_FALSE(msm_name_valid(""));
    CU_ASSERT_FALSE(msm_name_valid("a b"));
    CU_ASSERT_FALSE(msm_name_valid("a/b"));
    CU_ASSERT_FALSE(msm_name_valid("x:publish"));
    char longname[202];
    memset(longname, 'a', 201);
    longname[201] = '\0';
    CU_ASSERT_FALSE(msm_name_valid(longname));
    longname[200] = '\0';
    CU_ASSERT_TRUE(msm_name_valid(longname));
}

static void test_sub_defaults_and_round_trip(void)
{
    json_t *body = parse("{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
                         "\"secret\":\"s3\"}");
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *s = msm_sub_from_json("orders-sub", body, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s->topic, "orders");
    CU_ASSERT_EQUAL(s->nendpoints, 1);
    CU_ASSERT_EQUAL(s->endpoints[0].weight, 1);
    CU_ASSERT_EQUAL(s->max_concurrency, 64);
    CU_ASSERT_EQUAL(s->timeout_ms, 30000);
    CU_ASSERT_EQUAL(s->priority, 5);
    CU_ASSERT_EQUAL(s->max_attempts, 5);
    CU_ASSERT_EQUAL(s->min_backoff_ms, 100);
    CU_ASSERT_EQUAL(s->max_backoff_ms, 60000);
    CU_ASSERT_STRING_EQUAL(s->delivery_format, "native");
    CU_ASSERT_FALSE(s->ordered);
    /* Public JSON masks the secret; the stored one keeps it and parses back the same. */
    json_t *pub = msm_sub_to_json(s, false);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pub, "secret")), "***");
    json_t *stored = msm_sub_to_json(s, true);
    msm_sub_t *again = msm_sub_from_json("orders-sub", stored, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    CU_ASSERT_STRING_EQUAL(again->secret, "s3");
    CU_ASSERT_EQUAL(again->created_ms, s->created_ms);
    json_t *stored2 = msm_sub_to_json(again, true);
    CU_ASSERT_TRUE(json_equal(stored, stored2));
    json_decref(pub);
    json_decref(stored);
    json_decref(stored2);
    msm_sub_free(again);
    msm_sub_free(s);
    json_decref(body);
    msm_json_err_deinit(&e);
}

/* PEM of the right shape (registry checks only the shape; the frontend parses it). */
#define CERT_PEM  "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"
#define KEY_PEM   "-----BEGIN EC PRIVATE KEY-----\\nMHcC\\n-----END EC PRIVATE KEY-----\\n"
#define HTTPS_SUB "{\"topic\":\"t\",\"endpoints\":[{\"url\":\"https://x/\"}],"

/* Each bad body names the field at fault. */
static void test_sub_errors(void)
{
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"endpoints\":[{\"url\":\"http://x/\"}]}", "topic"},
        {"{\"topic\":\"t\"}", "endpoints"},
        {"{\"topic\":\"t\",\"endpoints\":[]}", "endpoints"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"ftp://x\"}]}", "endpoints[0].url"},
        {"{\"topic\":\"t\",\"endpoints\":[{}]}", "endpoints[0].url"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\",\"weight\":0}]}",
         "endpoints[0].weight"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"priority\":10}", "priority"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"max_concurrency\":0}",
         "max_concurrency"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"ordered\":\"yes\"}", "ordered"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"delivery_format\":\"xml\"}",
         "delivery_format"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"retry\":{\"max_attempts\":0}}",
         "retry.max_attempts"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"bogus\":1}", "bogus"},
        {"{\"topic\":\"bad name\",\"endpoints\":[{\"url\":\"http://x/\"}]}", "topic"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}],\"locality\":[1]}",
         "locality[0]"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\",\"health\":{\"path\":\"x\"}}]}",
         "endpoints[0].health.path"},
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\",\"health\":{\"bogus\":1}}]}",
         "endpoints[0].health.bogus"},
        /* push_tls: honoured on https:// only, cert and key together, PEM blocks */
        {"{\"topic\":\"t\",\"endpoints\":[{\"url\":\"https://x/\"},{\"url\":\"http://y/\"}],"
         "\"push_tls\":{\"ca_pem\":\"" CERT_PEM "\"}}",
         "push_tls"},
        {HTTPS_SUB "\"push_tls\":{}}", "push_tls"},
        {HTTPS_SUB "\"push_tls\":\"" CERT_PEM "\"}", "push_tls"},
        {HTTPS_SUB "\"push_tls\":{\"client_cert_pem\":\"" CERT_PEM "\"}}",
         "push_tls.client_key_pem"},
        {HTTPS_SUB "\"push_tls\":{\"client_key_pem\":\"" KEY_PEM "\"}}",
         "push_tls.client_cert_pem"},
        {HTTPS_SUB "\"push_tls\":{\"ca_pem\":\"not pem\"}}", "push_tls.ca_pem"},
        {HTTPS_SUB "\"push_tls\":{\"ca_pem\":\"" KEY_PEM "\"}}", "push_tls.ca_pem"},
        {HTTPS_SUB "\"push_tls\":{\"client_cert_pem\":\"" CERT_PEM "\",\"client_key_pem\":\""
         CERT_PEM "\"}}",
         "push_tls.client_key_pem"},
        {HTTPS_SUB "\"push_tls\":{\"ca_pem\":\"" CERT_PEM "\",\"crl_pem\":\"x\"}}",
         "push_tls.crl_pem"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *body = parse(cases[i].body);
        msm_json_err_t e;
        msm_json_err_init(&e);
        msm_sub_t *s = msm_sub_from_json("s", body, &e);
        CU_ASSERT_PTR_NULL(s);
        msm_sub_free(s);
        json_t *err = msm_json_err_body(&e, NULL);
        json_t *details = json_object_get(json_object_get(err, "error"), "details");
        int named = 0;
        for (size_t d = 0; d < json_array_size(details); d++) {
            const char *f = json_string_value(json_object_get(json_array_get(details, d), "field"));
            named |= f && strcmp(f, cases[i].field) == 0;
        }
        if (!named)
            fprintf(stderr, "case %zu: %s not named in %s\n", i, cases[i].field,
                    json_dumps(details, JSON_COMPACT));
        CU_ASSERT_TRUE(named);
        json_decref(err);
        json_decref(body);
        msm_json_err_deinit(&e);
    }
}

/* push_tls: stored whole, shown with the key masked; a PEM member over 64 KiB is refused. */
static void test_sub_push_tls(void)
{
    json_t *body = parse(HTTPS_SUB "\"push_tls\":{\"ca_pem\":\"" CERT_PEM
                                   "\",\"client_cert_pem\":\"" CERT_PEM
                                   "\",\"client_key_pem\":\"" KEY_PEM "\"}}");
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *s = msm_sub_from_json("s", body, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s->push_tls.client_key_pem, "EC PRIVATE KEY"));
    json_t *pub = msm_sub_to_json(s, false), *stored = msm_sub_to_json(s, true);
    json_t *pub_tls = json_object_get(pub, "push_tls");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pub_tls, "client_key_pem")), "***");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pub_tls, "ca_pem")),
                           s->push_tls.ca_pem);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pub_tls, "client_cert_pem")),
                           s->push_tls.client_cert_pem);
    /* masking stored JSON (what GET reads from Redis) gives the same as the public form */
    json_t *masked = json_deep_copy(stored);
    msm_sub_mask_secrets(masked);
    CU_ASSERT_TRUE(json_equal(masked, pub));
    msm_sub_t *again = msm_sub_from_json("s", stored, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    CU_ASSERT_STRING_EQUAL(again->push_tls.client_key_pem, s->push_tls.client_key_pem);
    msm_sub_free(again);
    json_decref(masked);
    json_decref(pub);
    json_decref(stored);
    msm_sub_free(s);

    /* one byte over the limit */
    char *big = malloc(MSM_PUSH_TLS_PEM_MAX + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    size_t head = strlen("-----BEGIN CERTIFICATE-----\n");
    memset(big, 'A', MSM_PUSH_TLS_PEM_MAX + 1);
    memcpy(big, "-----BEGIN CERTIFICATE-----\n", head);
    memcpy(big + MSM_PUSH_TLS_PEM_MAX + 1 - 26, "\n-----END CERTIFICATE-----", 26);
    big[MSM_PUSH_TLS_PEM_MAX + 1] = '\0';
    json_object_set_new(json_object_get(body, "push_tls"), "ca_pem", json_string(big));
    CU_ASSERT_PTR_NULL(msm_sub_from_json("s", body, &e));
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 1);
    big[MSM_PUSH_TLS_PEM_MAX] = '\0'; /* exactly at the limit: accepted */
    memcpy(big + MSM_PUSH_TLS_PEM_MAX - 26, "\n-----END CERTIFICATE-----", 26);
    msm_json_err_deinit(&e);
    msm_json_err_init(&e);
    json_object_set_new(json_object_get(body, "push_tls"), "ca_pem", json_string(big));
    s = msm_sub_from_json("s", body, &e);
    CU_ASSERT_PTR_NOT_NULL(s);
    msm_sub_free(s);
    free(big);
    json_decref(body);
    msm_json_err_deinit(&e);
}

/* The detail recorded for @p field in @p e, or NULL (borrowed from @p err). */
static const char *detail_of(json_t *err, const char *field)
{
    json_t *details = json_object_get(json_object_get(err, "error"), "details");
    for (size_t d = 0; d < json_array_size(details); d++) {
        json_t *entry = json_array_get(details, d);
        const char *f = json_string_value(json_object_get(entry, "field"));
        if (f && strcmp(f, field) == 0)
            return json_string_value(json_object_get(entry, "description"));
    }
    return NULL;
}

static msm_sub_t *sub_with_filter(json_t *filter, msm_json_err_t *e)
{
    json_t *body = parse("{\"topic\":\"t\",\"endpoints\":[{\"url\":\"http://x/\"}]}");
    json_object_set_new(body, "filter", filter);
    msm_sub_t *s = msm_sub_from_json("s", body, e);
    json_decref(body);
    return s;
}

/* The filter is parsed at validation: kept parsed for the scheduler, refused with the
 * position of the error (API.md: a bad filter is a 400 with the position). */
static void test_sub_filter(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *s = sub_with_filter(json_string("attributes.kind = \"image\""), &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s->filter, "attributes.kind = \"image\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->filter_expr);
    Msm__V1__Event__AttributesEntry kv = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT, *attrs[] = {&kv};
    kv.key = "kind";
    kv.value = "image";
    CU_ASSERT_TRUE(msm_filter_match(s->filter_expr, attrs, 1));
    kv.value = "text";
    CU_ASSERT_FALSE(msm_filter_match(s->filter_expr, attrs, 1));
    /* Stored and loaded again: the same text, parsed again. */
    json_t *stored = msm_sub_to_json(s, true);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(stored, "filter")), s->filter);
    msm_sub_t *again = msm_sub_from_json("s", stored, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    CU_ASSERT_PTR_NOT_NULL(again->filter_expr);
    msm_sub_free(again);
    json_decref(stored);
    msm_sub_free(s);

    /* "" and null: no filter at all. */
    s = sub_with_filter(json_string(""), &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NULL(s->filter);
    CU_ASSERT_PTR_NULL(s->filter_expr);
    json_t *pub = msm_sub_to_json(s, false);
    CU_ASSERT_TRUE(json_is_null(json_object_get(pub, "filter"))); /* as with no filter given */
    json_decref(pub);
    msm_sub_free(s);
    s = sub_with_filter(json_null(), &e);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT_PTR_NULL(s ? s->filter_expr : NULL);
    msm_sub_free(s);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 0);

    /* Refused: the detail names the field and the position. */
    static const struct {
        const char *filter, *description;
    } bad[] = {
        {"attributes.kind = image", "position 19: expected a string literal, found \"image\""},
        {"attributes.kind = \"a\" and attributes:b",
         "position 23: expected AND, OR or the end of the filter, found \"and\" (AND, OR and "
         "NOT are written in capitals)"},
        {"attributes:a AND attributes:b OR attributes:c",
         "position 31: AND and OR cannot be mixed without parentheses"},
        {"   ", "position 4: expected a condition, found the end of the filter"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msm_json_err_t be;
        msm_json_err_init(&be);
        CU_ASSERT_PTR_NULL(sub_with_filter(json_string(bad[i].filter), &be));
        json_t *err = msm_json_err_body(&be, NULL);
        const char *d = detail_of(err, "filter");
        if (!d || strcmp(d, bad[i].description) != 0)
            fprintf(stderr, "\n  %s: got %s\n", bad[i].filter, d ? d : "(none)");
        CU_ASSERT_TRUE(d && strcmp(d, bad[i].description) == 0);
        json_decref(err);
        msm_json_err_deinit(&be);
    }
    /* Longer than MSM_FILTER_TEXT_MAX (4096 bytes): refused by length, before parsing. */
    char *text = malloc(MSM_FILTER_TEXT_MAX + 2);
    memset(text, ' ', MSM_FILTER_TEXT_MAX + 1);
    memcpy(text, "attributes:a", 12);
    text[MSM_FILTER_TEXT_MAX + 1] = '\0';
    msm_json_err_t le;
    msm_json_err_init(&le);
    CU_ASSERT_PTR_NULL(sub_with_filter(json_string(text), &le));
    json_t *err = msm_json_err_body(&le, NULL);
    CU_ASSERT_PTR_NOT_NULL(detail_of(err, "filter"));
    json_decref(err);
    msm_json_err_deinit(&le);
    text[MSM_FILTER_TEXT_MAX] = '\0'; /* at the limit, trailing blanks and all: fine */
    s = sub_with_filter(json_string(text), &e);
    CU_ASSERT_PTR_NOT_NULL(s);
    msm_sub_free(s);
    free(text);
    msm_json_err_deinit(&e);
}

static void test_topic(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_topic_t *t = msm_topic_from_json("orders", NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->partitions, 4);
    CU_ASSERT_PTR_NULL(t->schema_subject);
    msm_topic_free(t);
    json_t *body = parse("{\"schema_subject\":\"orders-value\",\"partitions\":8}");
    t = msm_topic_from_json("orders", body, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_STRING_EQUAL(t->schema_subject, "orders-value");
    CU_ASSERT_EQUAL(t->partitions, 8);
    msm_topic_free(t);
    json_decref(body);
    CU_ASSERT_PTR_NULL(msm_topic_from_json("bad/name", NULL, &e));
    msm_json_err_deinit(&e);
}

/* ---- store and watch ---- */

typedef struct {
    int changes;
    int done;
    int err;
} watch_t;

static void on_change(msm_registry_t *reg, void *opaque)
{
    (void)reg;
    ((watch_t *)opaque)->changes++;
}

static void on_written(int err, const char *reason, void *opaque)
{
    (void)reason;
    watch_t *w = opaque;
    w->err = err;
    w->done = 1;
}

static int write_sync(msm_loop_t *loop, msm_redis_t *r, const char *kind, const char *name,
                      const char *json)
{
    watch_t w = {0};
    json_t *j = json ? parse(json) : NULL;
    int rc = j ? msm_registry_put(r, kind, name, j, on_written, &w)
               : msm_registry_delete(r, kind, name, on_written, &w);
    json_decref(j);
    if (rc != MSM_OK || msm_test_wait_flag(loop, &w.done, 5000) != 0)
        return MSM_ERR_TIMEOUT;
    return w.err;
}

static int has_changes(void *arg)
{
    return ((watch_t *)arg)->changes > 0;
}

static void test_store_and_watch(void)
{
    char ns[64];
    msm_loop_t *loop = msm_loop_new();
    msm_redis_conf_t rc = {.url = srv.url, .ns = msm_test_namespace(ns, sizeof(ns))};
    char err[256];
    msm_redis_t *r = msm_redis_new(loop, &rc, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    watch_t w = {0};
    msm_registry_t *reg = msm_registry_new(r, 50, on_change, &w);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    CU_ASSERT_TRUE(msm_registry_loaded(reg));
    CU_ASSERT_EQUAL(msm_registry_topic_count(reg), 0);

    w.changes = 0;
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_TOPICS, "orders", "{\"partitions\":2}"), MSM_OK);
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "s1",
                               "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://h/\"}]}"),
                    MSM_OK);
    /* A stored entry that no longer validates is skipped, not fatal. */
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "broken", "{\"topic\":1}"), MSM_OK);
    /* Filters are parsed on load: a good one is there parsed, a bad one (stored before
     * filters were checked) makes its entry invalid like any other bad field. */
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "filtered",
                               "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://h/\"}],"
                               "\"filter\":\"attributes:kind\"}"),
                    MSM_OK);
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "badfilter",
                               "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://h/\"}],"
                               "\"filter\":\"attributes:kind or\"}"),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    msm_test_spin(loop, 200); /* the watcher may have seen the first write alone */
    CU_ASSERT_EQUAL(msm_registry_topic_count(reg), 1);
    CU_ASSERT_EQUAL(msm_registry_topic(reg, "orders")->partitions, 2);
    CU_ASSERT_EQUAL(msm_registry_sub_count(reg), 2);
    CU_ASSERT_STRING_EQUAL(msm_registry_sub(reg, "s1")->topic, "orders");
    CU_ASSERT_PTR_NULL(msm_registry_sub(reg, "s1")->filter_expr);
    CU_ASSERT_PTR_NULL(msm_registry_sub(reg, "broken"));
    CU_ASSERT_PTR_NULL(msm_registry_sub(reg, "badfilter"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(msm_registry_sub(reg, "filtered"));
    CU_ASSERT_PTR_NOT_NULL(msm_registry_sub(reg, "filtered")->filter_expr);

    w.changes = 0;
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "s1", NULL), MSM_OK);
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "s1", NULL), MSM_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    CU_ASSERT_PTR_NULL(msm_registry_sub(reg, "s1"));

    /* Nothing changes: no callbacks. */
    w.changes = 0;
    msm_test_spin(loop, 300);
    CU_ASSERT_EQUAL(w.changes, 0);
    msm_registry_free(reg);
    msm_redis_free(r);
    msm_loop_free(loop);
}

/* Schedules are part of the snapshot: a stored one with its envelope loads, one that does
 * not validate (no envelope: not written by a frontend) is skipped. */
static void test_schedules_watch(void)
{
    char ns[64];
    msm_loop_t *loop = msm_loop_new();
    msm_redis_conf_t rc = {.url = srv.url, .ns = msm_test_namespace(ns, sizeof(ns))};
    char err[256];
    msm_redis_t *r = msm_redis_new(loop, &rc, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    watch_t w = {0};
    msm_registry_t *reg = msm_registry_new(r, 50, on_change, &w);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    CU_ASSERT_EQUAL(msm_registry_schedule_count(reg), 0);
    w.changes = 0;
    /* "EgZvcmRlcnM=" is an msm.v1.Event with topic "orders" */
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SCHEDULES, "tick",
                               "{\"topic\":\"orders\",\"every_ms\":1000,\"event\":{\"data\":1},"
                               "\"updated_ms\":7,\"envelope\":\"EgZvcmRlcnM=\"}"),
                    MSM_OK);
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SCHEDULES, "raw",
                               "{\"topic\":\"orders\",\"every_ms\":1000,\"event\":{}}"),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    msm_test_spin(loop, 200);
    CU_ASSERT_EQUAL_FATAL(msm_registry_schedule_count(reg), 1);
    const msm_schedule_t *s = msm_registry_schedule_at(reg, 0);
    CU_ASSERT_STRING_EQUAL(s->name, "tick");
    CU_ASSERT_EQUAL(s->every_ms, 1000);
    CU_ASSERT_EQUAL(s->updated_ms, 7);
    CU_ASSERT_EQUAL(s->envelope_len, 8);
    CU_ASSERT_PTR_NULL(msm_registry_schedule_at(reg, 1));
    w.changes = 0;
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SCHEDULES, "tick", NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    CU_ASSERT_EQUAL(msm_registry_schedule_count(reg), 0);
    msm_registry_free(reg);
    msm_redis_free(r);
    msm_loop_free(loop);
}

/* ---- the barrier ---- */

typedef struct {
    int calls;
    int err;
    int saw_sub; /* the snapshot had "late" when the callback ran */
} sync_t;

static void on_synced(msm_registry_t *reg, int err, void *opaque)
{
    sync_t *s = opaque;
    s->calls++;
    s->err = err;
    s->saw_sub = msm_registry_sub(reg, "late") != NULL;
}

typedef struct {
    sync_t *s;
    int n;
} all_synced_t;

static int all_synced(void *arg)
{
    all_synced_t *a = arg;
    for (int i = 0; i < a->n; i++) {
        if (!a->s[i].calls)
            return 0;
    }
    return 1;
}

static void test_sync_barrier(void)
{
    char ns[64], err[256];
    msm_loop_t *loop = msm_loop_new();
    msm_redis_conf_t rc = {.url = srv.url, .ns = msm_test_namespace(ns, sizeof(ns))};
    msm_redis_t *r = msm_redis_new(loop, &rc, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    watch_t w = {0};
    /* A poll so rare it never runs here: only the syncs can see the change. */
    msm_registry_t *reg = msm_registry_new(r, 600000, on_change, &w);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, has_changes, &w, 5000), MSM_OK);
    CU_ASSERT_EQUAL(msm_registry_sub_count(reg), 0);

    /* Nothing changed: the callback comes, with no reload. */
    sync_t s[4] = {{0}};
    all_synced_t a = {s, 1};
    CU_ASSERT_EQUAL(msm_registry_sync(reg, on_synced, &s[0]), MSM_OK);
    CU_ASSERT_EQUAL(s[0].calls, 0); /* never from inside the call */
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, all_synced, &a, 5000), MSM_OK);
    CU_ASSERT_EQUAL(s[0].err, MSM_OK);
    CU_ASSERT_EQUAL(w.changes, 1);

    /* A change committed before the sync is in the snapshot its callback sees. */
    CU_ASSERT_EQUAL(write_sync(loop, r, MSM_KEY_SUBS, "late",
                               "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://h/\"}]}"),
                    MSM_OK);
    CU_ASSERT_PTR_NULL(msm_registry_sub(reg, "late"));
    memset(s, 0, sizeof(s));
    msm_redis_stats_t before, after;
    msm_redis_stats(r, &before);
    a.n = 4;
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(msm_registry_sync(reg, on_synced, &s[i]), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, all_synced, &a, 5000), MSM_OK);
    msm_redis_stats(r, &after);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(s[i].calls, 1);
        CU_ASSERT_EQUAL(s[i].err, MSM_OK);
        CU_ASSERT_TRUE(s[i].saw_sub);
    }
    CU_ASSERT_EQUAL(w.changes, 2);
    /* Four syncs asked together share one check: a GET of the version, and since it moved,
     * one reload. */
    CU_ASSERT_EQUAL(after.commands - before.commands, 2);

    /* Freed with a sync pending: answered, with MSM_ERR_SHUTDOWN. */
    memset(s, 0, sizeof(s));
    CU_ASSERT_EQUAL(msm_registry_sync(reg, on_synced, &s[0]), MSM_OK);
    CU_ASSERT_EQUAL(msm_registry_sync(reg, on_synced, &s[1]), MSM_OK);
    msm_registry_free(reg);
    CU_ASSERT_EQUAL(s[0].calls, 1);
    CU_ASSERT_EQUAL(s[0].err, MSM_ERR_SHUTDOWN);
    CU_ASSERT_EQUAL(s[1].calls, 1);
    msm_test_spin(loop, 50); /* the reply of the check in flight frees the registry */
    msm_redis_free(r);
    msm_loop_free(loop);
}

static int suite_init(void)
{
    return msm_test_redis_start(&srv) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&srv);
    return 0;
}

static CU_TestInfo tests[] = {
    {"names", test_names},
    {"subscription defaults and JSON round trip", test_sub_defaults_and_round_trip},
    {"subscription errors name their field", test_sub_errors},
    {"subscription push_tls: stored whole, key masked, size bounded", test_sub_push_tls},
    {"subscription filter: parsed, errors with their position", test_sub_filter},
    {"topics", test_topic},
    {"store and watch in Redis", test_store_and_watch},
    {"schedules in the snapshot", test_schedules_watch},
    {"sync: the subscription barrier", test_sync_barrier},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"registry", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
