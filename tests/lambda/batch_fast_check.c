/* SPDX-License-Identifier: MIT */
/* The fast batch body reader against json_loadb() + msm__event_from_json(): same events,
 * every field, attribute, extension and payload byte. */
#include "batch_fast_check.h"

#include "lambda_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST_SUBSCRIPTION "req-sub"
#define REQUEST_DEADLINE     1700000000000LL

typedef const char *(*text_of_t)(const msm_event_t *);

static const char *
pairs_differ(const msm_event_t *a,
             const msm_event_t *b,
             size_t (*count)(const msm_event_t *),
             int (*at)(const msm_event_t *, size_t, const char **, const char **))
{
    if (count(a) != count(b))
        return "count";
    for (size_t i = 0; i < count(a); i++) {
        const char *an, *av, *bn, *bv;
        at(a, i, &an, &av);
        at(b, i, &bn, &bv);
        if (strcmp(an, bn) != 0 || strcmp(av, bv) != 0)
            return "name or value";
    }
    return NULL;
}

static const char *event_differs(const msm_event_t *f, const msm_event_t *j)
{
    static const struct {
        const char *name;
        text_of_t get;
    } texts[] = {{"id", msm_event_id},
                 {"topic", msm_event_topic},
                 {"source", msm_event_source},
                 {"type", msm_event_type},
                 {"subject", msm_event_subject},
                 {"dataschema", msm_event_dataschema},
                 {"source_id", msm_event_source_id},
                 {"subscription", msm_event_subscription},
                 {"key", msm_event_key},
                 {"ordering_key", msm_event_ordering_key},
                 {"traceparent", msm_event_traceparent},
                 {"content_type", msm_event_content_type}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (strcmp(texts[i].get(f), texts[i].get(j)) != 0)
            return texts[i].name;
    }
    if (msm_event_time_ms(f) != msm_event_time_ms(j) ||
        msm_event_deadline_ms(f) != msm_event_deadline_ms(j) ||
        msm_event_attempt(f) != msm_event_attempt(j))
        return "time, deadline or attempt";
    if (pairs_differ(f, j, msm_event_attr_count, msm_event_attr_at))
        return "attributes";
    if (pairs_differ(f, j, msm_event_extension_count, msm_event_extension_at))
        return "extensions";
    size_t fl, jl;
    const void *fp = msm_event_payload(f, &fl), *jp = msm_event_payload(j, &jl);
    if (fl != jl || memcmp(fp, jp, fl) != 0)
        return "payload";
    return NULL;
}

/* The jansson path's verdict on the events the fast reader took. */
static batch_verdict_t
compare(msm_event_t **evs, size_t n, const json_t *arr, char *why, size_t why_size)
{
    if (!json_is_array(arr)) {
        snprintf(why, why_size, "the jansson path refuses the body");
        return BATCH_DIFFERS;
    }
    if (json_array_size(arr) != n) {
        snprintf(why, why_size, "%zu events, the jansson path %zu", n, json_array_size(arr));
        return BATCH_DIFFERS;
    }
    for (size_t i = 0; i < n; i++) {
        char err[160];
        msm_event_t *ev = msm__event_from_json(json_array_get(arr, i), REQUEST_SUBSCRIPTION,
                                               REQUEST_DEADLINE, err, sizeof(err));
        const char *what = ev ? event_differs(evs[i], ev) : err;
        int refused = !ev;
        msm__event_free(ev);
        if (what) {
            snprintf(why, why_size, "[%zu]: %s %s", i, refused ? "refused:" : "differs in", what);
            return BATCH_DIFFERS;
        }
    }
    return BATCH_AGREES;
}

batch_verdict_t batch_fast_check(const char *body, size_t len, char *why, size_t why_size)
{
    msm_event_t **evs;
    size_t n;
    if (!msm__batch_read_fast(body, len, REQUEST_SUBSCRIPTION, REQUEST_DEADLINE, &evs, &n))
        return BATCH_DECLINED;
    json_t *arr = json_loadb(body, len, 0, NULL);
    batch_verdict_t v = compare(evs, n, arr, why, why_size);
    json_decref(arr);
    for (size_t i = 0; i < n; i++)
        msm__event_free(evs[i]);
    free(evs);
    return v;
}
