/* SPDX-License-Identifier: MIT */
/* msmctl publish: POST /v1/topics/{topic}:publish in batches of up to 100 events, paced by
 * --rate, with a progress bar on stderr and the throughput at the end. */
#include "msmctl.h"

#include "msm/time.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_WIDTH       30
#define PROGRESS_INTERVAL_MS 100

typedef struct {
    int pr_on;
    long long pr_total;
    uint64_t pr_start_ms;
    uint64_t pr_last_ms;
} progress_t;

static void progress_draw(progress_t *p, long long done, int final)
{
    if (!p->pr_on)
        return;
    uint64_t now = msm_time_mono_ms();
    if (!final && now - p->pr_last_ms < PROGRESS_INTERVAL_MS)
        return;
    p->pr_last_ms = now;
    double secs = (double)(now - p->pr_start_ms) / 1000.0;
    int filled = (int)(PROGRESS_WIDTH * done / (p->pr_total ? p->pr_total : 1));
    char bar[PROGRESS_WIDTH + 1];
    for (int i = 0; i < PROGRESS_WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[PROGRESS_WIDTH] = '\0';
    fprintf(stderr, "\r[%s] %lld/%lld %3d%% %.0f events/s", bar, done, p->pr_total,
            (int)(100 * done / (p->pr_total ? p->pr_total : 1)),
            secs > 0 ? (double)done / secs : 0.0);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

json_t *ctl_event_json(ctl_t *c)
{
    if (!c->o.data) {
        ctl_error(c, "--data is required (JSON, or @FILE)");
        return NULL;
    }
    char *text = ctl_text_arg(c, "--data", c->o.data);
    if (!text)
        return NULL;
    json_error_t je;
    json_t *data = json_loads(text, JSON_DECODE_ANY, &je);
    free(text);
    if (!data) {
        ctl_error(c, "--data is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                  je.column);
        return NULL;
    }
    json_t *ev = json_object();
    json_object_set_new(ev, "data", data);
    if (c->o.key)
        json_object_set_new(ev, "key", json_string(c->o.key));
    if (c->o.ordering_key)
        json_object_set_new(ev, "ordering_key", json_string(c->o.ordering_key));
    if (c->o.delay_ms > 0)
        json_object_set_new(ev, "delay_ms", json_integer(c->o.delay_ms));
    if (c->o.priority != CTL_UNSET)
        json_object_set_new(ev, "priority", json_integer(c->o.priority));
    if (c->o.attr) {
        json_t *attrs = json_object();
        for (char **kv = c->o.attr; *kv; kv++) {
            const char *eq = strchr(*kv, '=');
            char name[256];
            snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - *kv) : (int)strlen(*kv), *kv);
            json_object_set_new(attrs, name, json_string(eq ? eq + 1 : ""));
        }
        json_object_set_new(ev, "attributes", attrs);
    }
    return ev;
}

static json_t *make_batch(ctl_t *c, json_t *tmpl, long long first, int n)
{
    json_t *events = json_array();
    for (int i = 0; i < n; i++) {
        if (!c->o.idempotency_key) {
            /* The same object n times: serialised n times, stored once. */
            json_array_append(events, tmpl);
            continue;
        }
        json_t *ev = json_copy(tmpl);
        char key[512];
        if (c->o.count > 1)
            snprintf(key, sizeof(key), "%s-%lld", c->o.idempotency_key, first + i + 1);
        else
            snprintf(key, sizeof(key), "%s", c->o.idempotency_key);
        json_object_set_new(ev, "idempotency_key", json_string(key));
        json_array_append_new(events, ev);
    }
    return json_pack("{s:o}", "events", events);
}

/* With --rate, wait until the first @p due_count events are due (the batch about to go
 * included: a batch may not run ahead of the rate). */
static void pace(double rate, uint64_t start_ms, long long due_count)
{
    if (rate <= 0)
        return;
    uint64_t due = start_ms + (uint64_t)llround((double)due_count * 1000.0 / rate);
    uint64_t now = msm_time_mono_ms();
    if (due > now) {
        uint64_t ms = due - now;
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void print_single(ctl_t *c, const ctl_resp_t *r)
{
    if (c->o.json) {
        ctl_print_raw(r);
        return;
    }
    json_t *res = json_array_get(json_object_get(r->json, "results"), 0);
    const char *id = json_string_value(json_object_get(res, "id"));
    printf("%s%s\n", id ? id : "(no id in the answer)",
           json_is_true(json_object_get(res, "duplicate")) ? " (duplicate)" : "");
}

int ctl_publish(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    json_t *tmpl = ctl_event_json(c);
    if (!tmpl)
        return CTL_EXIT_USAGE;
    char *esc = ctl_escape(c, args[0]);
    char path[1024];
    snprintf(path, sizeof(path), "/v1/topics/%s:publish", esc ? esc : "");
    free(esc);
    long long total = c->o.count, sent = 0;
    int batch = c->o.batch_size;
    if (c->o.rate > 0 && c->o.rate / 10 < batch)
        batch = c->o.rate / 10 >= 1 ? (int)(c->o.rate / 10) : 1; /* ~10 requests a second */
    progress_t prog = {.pr_on = total > 1 && (c->o.progress || isatty(STDERR_FILENO)),
                       .pr_total = total,
                       .pr_start_ms = msm_time_mono_ms()};
    json_t *results = json_array();
    int rc = CTL_EXIT_OK;
    while (sent < total) {
        int n = total - sent < batch ? (int)(total - sent) : batch;
        pace(c->o.rate, prog.pr_start_ms, sent + n);
        json_t *body = make_batch(c, tmpl, sent, n);
        ctl_resp_t r;
        int hr = ctl_http(c, "POST", path, body, &r);
        json_decref(body);
        if (hr != 0) {
            if (prog.pr_on)
                fputc('\n', stderr);
            if (sent > 0)
                ctl_error(c, "published %lld of %lld events before the error", sent, total);
            rc = CTL_EXIT_ERROR;
            break;
        }
        sent += n;
        if (total == 1)
            print_single(c, &r);
        else if (c->o.json)
            json_array_extend(results, json_object_get(r.json, "results"));
        ctl_resp_free(&r);
        progress_draw(&prog, sent, sent == total);
    }
    if (rc == CTL_EXIT_OK && total > 1) {
        double secs = (double)(msm_time_mono_ms() - prog.pr_start_ms) / 1000.0;
        double eps = secs > 0 ? (double)total / secs : 0.0;
        if (c->o.json) {
            json_t *out = json_pack("{s:I,s:f,s:f,s:O}", "published", (json_int_t)total, "seconds",
                                    secs, "events_per_s", eps, "results", results);
            char *s = json_dumps(out, JSON_COMPACT);
            printf("%s\n", s ? s : "{}");
            free(s);
            json_decref(out);
        } else {
            printf("published %lld events to %s in %.2f s (%.0f events/s)\n", total, args[0], secs,
                   eps);
        }
    }
    json_decref(results);
    json_decref(tmpl);
    return rc;
}
