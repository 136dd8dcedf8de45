/* SPDX-License-Identifier: MIT */
/* Recurring schedules: validation, JSON, due times, tick ids and keys (msm/schedule.h). */
#include "msm/schedule.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stored envelope larger than this is not one the frontend wrote. */
#define ENVELOPE_B64_MAX (4 * 1024 * 1024)

static const char *const catch_up_names[] = {"none", "last", "all", NULL};

const char *msm_catch_up_name(msm_catch_up_t c)
{
    return c >= MSM_CATCH_UP_NONE && c <= MSM_CATCH_UP_ALL ? catch_up_names[c] : "?";
}

void msm_schedule_free(msm_schedule_t *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->topic);
    free(s->cron);
    free(s->timezone);
    json_decref(s->event);
    free(s->envelope);
    free(s);
}

/* cron (parsed, and matching some minute when @p fresh) or every_ms: exactly one. */
static void
check_timing(msm_json_err_t *e, const json_t *body, int fresh, msm_schedule_t *s, const char **cron)
{
    int64_t every = 0;
    msm_json_get_strn(e, body, "cron", MSM_JSON_NULLABLE | MSM_JSON_NONEMPTY, MSM_CRON_TEXT_MAX,
                      cron);
    int every_given =
        msm_json_get_int(e, body, "every_ms", MSM_JSON_NULLABLE, MSM_SCHEDULE_EVERY_MIN_MS,
                         MSM_SCHEDULE_EVERY_MAX_MS, &every) == MSM_OK &&
        every > 0;
    int every_named =
        json_object_get(body, "every_ms") && !json_is_null(json_object_get(body, "every_ms"));
    int cron_named = json_object_get(body, "cron") && !json_is_null(json_object_get(body, "cron"));
    if (cron_named && every_named) {
        msm_json_err_add(e, "every_ms", "cannot be used with cron: give exactly one of them");
        return;
    }
    if (!cron_named && !every_named) {
        msm_json_err_add(e, "cron", "is required (or every_ms): give exactly one of them");
        return;
    }
    if (every_given)
        s->every_ms = every;
    if (!*cron)
        return;
    char why[160];
    if (msm_cron_parse(*cron, &s->cron_expr, why, sizeof(why)) != MSM_OK)
        msm_json_err_add(e, "cron", "%s", why);
    else if (fresh && msm_cron_next(&s->cron_expr, msm_time_unix_ms()) < 0)
        msm_json_err_add(e, "cron", "matches no minute in the next 30 years");
}

static void check_envelope(msm_json_err_t *e, const json_t *body, msm_schedule_t *s)
{
    const char *b64 = NULL;
    if (msm_json_get_strn(e, body, "envelope", MSM_JSON_REQUIRED, ENVELOPE_B64_MAX, &b64) != MSM_OK)
        return;
    size_t n = strlen(b64), len = 0;
    s->envelope = malloc(n / 4 * 3 + 1);
    Msm__V1__Event *ev = NULL;
    if (!s->envelope || msm_base64_decode(b64, n, s->envelope, &len) != MSM_OK ||
        !(ev = msm_event_unpack(s->envelope, len))) {
        msm_json_err_add(e, "envelope", "must be a packed msm.v1.Event in base64");
        return;
    }
    msm_event_free(ev);
    s->envelope_len = len;
}

msm_schedule_t *
msm_schedule_from_json(const char *name, const json_t *body, int stored, msm_json_err_t *e)
{
    static const char *const known[] = {"name",       "topic",    "cron",  "every_ms",
                                        "timezone",   "catch_up", "event", "created_ms",
                                        "updated_ms", "envelope", NULL};
    if (msm_json_expect_object(e, body) != MSM_OK)
        return NULL;
    msm_schedule_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->catch_up = MSM_CATCH_UP_LAST;
    msm_json_check_known(e, body, known);
    if (!stored && json_object_get(body, "envelope"))
        msm_json_err_add(e, "envelope", "is set by msm, not by a request");
    const char *given = NULL, *topic = NULL, *cron = NULL, *tz = "UTC", *catch_up = NULL;
    json_t *event = NULL;
    int64_t created = 0, updated = 0;
    msm_json_get_str(e, body, "name", MSM_JSON_NULLABLE, &given);
    if (given && strcmp(given, name) != 0)
        msm_json_err_add(e, "name", "must match the name in the path");
    if (!msm_name_valid(name))
        msm_json_err_add(e, "name", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_get_str(e, body, "topic", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &topic) ==
            MSM_OK &&
        !msm_name_valid(topic))
        msm_json_err_add(e, "topic", "must match [A-Za-z0-9._-]{1,200}");
    check_timing(e, body, !stored, s, &cron);
    if (msm_json_get_strn(e, body, "timezone", MSM_JSON_NULLABLE, 64, &tz) == MSM_OK && !tz)
        tz = "UTC";
    if (tz && strcmp(tz, "UTC") != 0)
        msm_json_err_add(e, "timezone",
                         "only \"UTC\" is supported (IANA time zones are not; docs/schedules.md)");
    if (msm_json_get_str(e, body, "catch_up", MSM_JSON_NULLABLE, &catch_up) == MSM_OK && catch_up) {
        int found = 0;
        for (int i = 0; catch_up_names[i]; i++) {
            if (strcmp(catch_up, catch_up_names[i]) == 0) {
                s->catch_up = (msm_catch_up_t)i;
                found = 1;
            }
        }
        if (!found)
            msm_json_err_add(e, "catch_up", "must be \"none\", \"last\" or \"all\"");
    }
    msm_json_get_object(e, body, "event", MSM_JSON_REQUIRED, &event);
    msm_json_get_int(e, body, "created_ms", MSM_JSON_NULLABLE, 0, INT64_MAX, &created);
    msm_json_get_int(e, body, "updated_ms", MSM_JSON_NULLABLE, 0, INT64_MAX, &updated);
    if (stored)
        check_envelope(e, body, s);
    if (msm_json_err_count(e)) {
        msm_schedule_free(s);
        return NULL;
    }
    s->name = strdup(name);
    s->topic = strdup(topic);
    s->cron = cron ? strdup(cron) : NULL;
    s->timezone = strdup(tz);
    s->event = json_incref(event);
    s->created_ms = created;
    s->updated_ms = updated;
    if (!s->name || !s->topic || (cron && !s->cron) || !s->timezone) {
        msm_schedule_free(s);
        return NULL;
    }
    return s;
}

json_t *msm_schedule_to_json(const msm_schedule_t *s, int stored)
{
    json_t *o = json_pack(
        "{s:s,s:s,s:s?,s:o,s:s,s:s,s:O,s:I,s:I}", "name", s->name, "topic", s->topic, "cron",
        s->cron, "every_ms", s->every_ms ? json_integer(s->every_ms) : json_null(), "timezone",
        s->timezone, "catch_up", msm_catch_up_name(s->catch_up), "event", s->event, "created_ms",
        (json_int_t)s->created_ms, "updated_ms", (json_int_t)s->updated_ms);
    if (o && stored && s->envelope) {
        char *b64 = malloc(msm_base64_encoded_size(s->envelope_len));
        if (!b64) {
            json_decref(o);
            return NULL;
        }
        msm_base64_encode(s->envelope, s->envelope_len, b64);
        json_object_set_new(o, "envelope", json_string(b64));
        free(b64);
    }
    return o;
}

msm_schedule_t *msm_schedule_dup(const msm_schedule_t *s)
{
    msm_schedule_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    *d = *s;
    d->name = strdup(s->name);
    d->topic = strdup(s->topic);
    d->cron = s->cron ? strdup(s->cron) : NULL;
    d->timezone = strdup(s->timezone);
    d->event = json_incref(s->event);
    d->envelope = s->envelope ? malloc(s->envelope_len ? s->envelope_len : 1) : NULL;
    if (d->envelope)
        memcpy(d->envelope, s->envelope, s->envelope_len);
    if (!d->name || !d->topic || (s->cron && !d->cron) || !d->timezone ||
        (s->envelope && !d->envelope)) {
        msm_schedule_free(d);
        return NULL;
    }
    return d;
}

int64_t msm_schedule_next(const msm_schedule_t *s, int64_t after_ms)
{
    if (s->cron)
        return msm_cron_next(&s->cron_expr, after_ms);
    if (s->every_ms <= 0)
        return -1;
    /* floor division: ticks before 1970 are multiples too */
    int64_t q = after_ms / s->every_ms - (after_ms % s->every_ms < 0);
    return (q + 1) * s->every_ms;
}

int msm_schedule_tick_key(const char *name, int64_t due_ms, char *buf, size_t n)
{
    return snprintf(buf, n, "msm-schedule:%s:%lld", name, (long long)due_ms);
}

void msm_schedule_tick_id(const char *name, int64_t due_ms, char *buf)
{
    char key[MSM_SCHEDULE_TICK_KEY_MAX];
    int n = msm_schedule_tick_key(name, due_ms, key, sizeof(key));
    msm_id_t id;
    msm_id_derive(due_ms, key, n > 0 && (size_t)n < sizeof(key) ? (size_t)n : strlen(key), &id);
    msm_id_format(&id, buf);
}
