/* SPDX-License-Identifier: MIT */
/* A lambda built for tests/lambda/test_lambda.c: it writes everything its handler sees as one
 * JSON line to --out FILE, and answers as the push's `Msm-Attr-want` attribute says:
 * ok | retry | fatal | retry-after | overloaded (429 without Retry-After) | overloaded-ok |
 * overloaded-retry-after | bogus (an invalid status) | sleep:<ms> (blocks, to overrun a
 * deadline) | later:<ms> (MSM_LATER, completed by a timer) | complete-inside.
 * Handlers: "sub-a" (that echo), "sub-b" (answers ok, records handler "sub-b"), and "*"
 * (the echo too) only with --star. */
#include "msm/lambda.h"
#include "msm/time.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *out;
    bool star;
    int out_fd;
} echo_t;

static const msm_conf_def_t echo_conf[] = {
    MSM_CONF_STR("out", echo_t, out, NULL, "file the JSON lines go to"),
    MSM_CONF_BOOL("star", echo_t, star, false, "also handle every other subscription"),
};

typedef struct {
    msm_timer_t lt_timer;
    msm_ctx_t *lt_ctx;
} later_t;

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void write_line(echo_t *e, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s || e->out_fd < 0) {
        free(s);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* the NUL goes: write exactly n + 1 bytes */
    ssize_t rc = write(e->out_fd, s, n + 1);
    (void)rc;
    free(s);
}

static json_t *describe(const char *handler, const msm_event_t *ev, msm_ctx_t *ctx)
{
    size_t len;
    const char *payload = msm_event_payload(ev, &len);
    json_t *attrs = json_array();
    for (size_t i = 0; i < msm_event_attr_count(ev); i++) {
        const char *n, *v;
        msm_event_attr_at(ev, i, &n, &v);
        json_array_append_new(attrs, json_pack("[s,s]", n, v));
    }
    const char *no_name, *no_value;
    int64_t remaining = msm_ctx_remaining_ms(ctx);
    json_t *exts = json_object();
    for (size_t i = 0; i < msm_event_extension_count(ev); i++) {
        const char *n, *v;
        msm_event_extension_at(ev, i, &n, &v);
        json_object_set_new(exts, n, json_string(v));
    }
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:i,s:I,s:s,s:s%,s:I,s:b,s:o,s:o,s:o,s:b,s:I,"
        "s:b,s:b}",
        "handler", handler, "id", msm_event_id(ev), "topic", msm_event_topic(ev), "source",
        msm_event_source(ev), "type", msm_event_type(ev), "time_ms",
        (json_int_t)msm_event_time_ms(ev), "subscription", msm_event_subscription(ev), "key",
        msm_event_key(ev), "ordering_key", msm_event_ordering_key(ev), "traceparent",
        msm_event_traceparent(ev), "attempt", msm_event_attempt(ev), "deadline_ms",
        (json_int_t)msm_event_deadline_ms(ev), "content_type", msm_event_content_type(ev),
        "payload", payload, len, "payload_len", (json_int_t)len, "nul_terminated",
        payload[len] == '\0', "attrs", attrs, "attr_kind", str_or_null(msm_event_attr(ev, "KIND")),
        "attr_missing", str_or_null(msm_event_attr(ev, "missing")), "at_out_of_range",
        msm_event_attr_at(ev, msm_event_attr_count(ev), &no_name, &no_value) == MSM_ERR_NOTFOUND,
        "remaining_ms", (json_int_t)(remaining == INT64_MAX ? -1 : remaining), "opaque_ok",
        msm_ctx_opaque(ctx) != NULL, "same_event", msm_ctx_event(ctx) == ev);
    json_object_set_new(o, "received_ms", json_integer(msm_time_unix_ms()));
    /* The producer's CloudEvents context (events published as CloudEvents). */
    json_object_set_new(o, "subject", json_string(msm_event_subject(ev)));
    json_object_set_new(o, "dataschema", json_string(msm_event_dataschema(ev)));
    json_object_set_new(o, "source_id", json_string(msm_event_source_id(ev)));
    json_object_set_new(o, "extensions", exts);
    json_object_set_new(o, "ext_partitionkey",
                        str_or_null(msm_event_extension(ev, "PartitionKey")));
    return o;
}

static void on_later(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    later_t *lt = opaque;
    msm_ctx_complete(lt->lt_ctx, MSM_OK);
    free(lt);
}

static void on_cancel(msm_ctx_t *ctx, void *opaque)
{
    later_t *lt = opaque;
    msm_loop_timer_stop(msm_ctx_loop(ctx), &lt->lt_timer);
    free(lt);
}

static msm_status_t answer_as_wanted(const char *want, msm_ctx_t *ctx)
{
    if (strcmp(want, "retry") == 0) {
        msm_ctx_set_error(ctx, "wanted %s", want);
        return MSM_RETRY;
    }
    if (strcmp(want, "fatal") == 0) {
        msm_ctx_set_error(ctx, "wanted %s", want);
        return MSM_FATAL;
    }
    if (strcmp(want, "retry-after") == 0) {
        msm_ctx_set_retry_after(ctx, 2500);
        return MSM_RETRY;
    }
    if (strcmp(want, "overloaded") == 0) {
        msm_ctx_set_overloaded(ctx);
        return MSM_RETRY;
    }
    if (strcmp(want, "overloaded-ok") == 0) {
        msm_ctx_set_overloaded(ctx); /* only a retry is answered 429 */
        return MSM_OK;
    }
    if (strcmp(want, "overloaded-retry-after") == 0) {
        msm_ctx_set_overloaded(ctx);
        msm_ctx_set_retry_after(ctx, 1000);
        return MSM_RETRY;
    }
    if (strcmp(want, "bogus") == 0)
        return 42;
    if (strcmp(want, "complete-inside") == 0) {
        msm_ctx_complete(ctx, MSM_FATAL);
        return MSM_OK; /* ignored: the completion counts */
    }
    if (strncmp(want, "sleep:", 6) == 0) {
        long ms = atol(want + 6);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return MSM_OK;
    }
    if (strncmp(want, "later:", 6) == 0) {
        later_t *lt = calloc(1, sizeof(*lt));
        if (!lt)
            return MSM_RETRY;
        lt->lt_ctx = ctx;
        msm_timer_init(&lt->lt_timer);
        msm_ctx_on_cancel(ctx, on_cancel, lt);
        msm_loop_timer_start(msm_ctx_loop(ctx), &lt->lt_timer, (uint64_t)atol(want + 6), on_later,
                             lt);
        return MSM_LATER;
    }
    return MSM_OK;
}

static msm_status_t on_echo(const msm_event_t *ev, msm_ctx_t *ctx)
{
    echo_t *e = msm_ctx_opaque(ctx);
    write_line(e, describe("echo", ev, ctx));
    const char *want = msm_event_attr(ev, "want");
    msm_ctx_log(ctx, MSM_LOG_DEBUG, "echo wants %s", want ? want : "ok");
    return answer_as_wanted(want ? want : "ok", ctx);
}

static msm_status_t on_sub_b(const msm_event_t *ev, msm_ctx_t *ctx)
{
    echo_t *e = msm_ctx_opaque(ctx);
    write_line(e, describe("sub-b", ev, ctx));
    return MSM_OK;
}

static int on_start(msm_lambda_t *l, void *opaque)
{
    echo_t *e = opaque;
    if (e->star && msm_lambda_on(l, "*", on_echo) == MSM_OK)
        return -1; /* handlers are fixed once serving: this must be refused */
    if (!e->out)
        return 0;
    e->out_fd = open(e->out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return e->out_fd < 0 ? -1 : 0;
}

static int on_stop(msm_lambda_t *l, void *opaque)
{
    (void)l;
    echo_t *e = opaque;
    if (e->out_fd >= 0)
        close(e->out_fd);
    return 0;
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    echo_t e = {.out_fd = -1};
    msm_lambda_t *l = msm_lambda_new("test-echo-lambda");
    msm_lambda_on(l, "sub-a", on_echo);
    msm_lambda_on(l, "sub-b", on_sub_b);
    /* The star handler must be known before msm_lambda_main() parses --star. */
    if (has_flag(argc, argv, "--star"))
        msm_lambda_on(l, "*", on_echo);
    msm_lambda_add_conf(l, echo_conf, MSM_CONF_COUNT(echo_conf), &e, sizeof(e));
    msm_lambda_on_start(l, on_start, &e);
    msm_lambda_on_stop(l, on_stop, &e);
    msm_lambda_set_opaque(l, &e);
    return msm_lambda_main(l, argc, argv);
}
