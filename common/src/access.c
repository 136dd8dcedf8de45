/* SPDX-License-Identifier: MIT */
/* The route guard (msm/access.h). */
#include "msm/access.h"

#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct msm_access_s {
    msm_auth_t *ac_auth;
    const msm_access_rule_t *ac_rules;
    size_t ac_nrules;
};

/* Every daemon's own routes: probes open, the rest admin (the default). */
static const msm_access_rule_t builtin_rules[] = {
    {"GET", "/healthz", NULL, NULL},
    {"GET", "/readyz", NULL, NULL},
};

msm_access_t *msm_access_new(msm_auth_t *auth, const msm_access_rule_t *rules, size_t n)
{
    msm_access_t *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->ac_auth = auth;
    a->ac_rules = rules;
    a->ac_nrules = n;
    return a;
}

void msm_access_free(msm_access_t *a)
{
    free(a);
}

void msm_access_set_rules(msm_access_t *a, const msm_access_rule_t *rules, size_t n)
{
    a->ac_rules = rules;
    a->ac_nrules = n;
}

static const msm_access_rule_t *
find_rule(const msm_access_rule_t *rules, size_t n, const char *method, const char *pattern)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rules[i].pattern, pattern) == 0 && strcmp(rules[i].method, method) == 0)
            return &rules[i];
    return NULL;
}

/* The principal of "Authorization: Bearer <token>", or NULL. */
static msm_principal_t *bearer(msm_access_t *a, const msm_http_req_t *req)
{
    const char *h = msm_http_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    const char *t = h + 7;
    while (*t == ' ')
        t++;
    size_t len = strlen(t);
    while (len > 0 && t[len - 1] == ' ')
        len--;
    return len ? msm_auth_by_token(a->ac_auth, t, len) : NULL;
}

int msm_access_guard(msm_http_req_t *req, const char *pattern, void *opaque, char *msg, size_t n)
{
    msm_access_t *a = opaque;
    const char *method = msm_http_req_method(req);
    const msm_access_rule_t *rule =
        find_rule(builtin_rules, sizeof(builtin_rules) / sizeof(builtin_rules[0]), method, pattern);
    if (!rule)
        rule = find_rule(a->ac_rules, a->ac_nrules, method, pattern);
    const char *kind = rule ? rule->kind : "admin";
    if (rule && !kind)
        return 0; /* open */
    /* A bearer token, else a verified TLS client certificate whose CN names a principal. */
    msm_principal_t *p = bearer(a, req);
    if (!p && !msm_http_req_header(req, "Authorization"))
        p = msm_auth_by_name(a->ac_auth, msm_http_req_client_subject(req));
    if (!p) {
        msm_http_add_header(req, "WWW-Authenticate", "Bearer");
        snprintf(msg, n, "%s",
                 msm_http_req_header(req, "Authorization")
                     ? "the bearer token is not known"
                     : "this route needs Authorization: Bearer <token>");
        return 401;
    }
    msm_http_req_set_principal(req, p);
    if (strcmp(kind, MSM_ACCESS_ANY) == 0)
        return 0;
    const char *resource = rule && rule->param ? msm_http_req_param(req, rule->param) : NULL;
    if (msm_principal_can(p, kind, resource))
        return 0;
    if (resource)
        snprintf(msg, n, "principal \"%s\" lacks the scope %s:%s", msm_principal_name(p), kind,
                 resource);
    else
        snprintf(msg, n, "principal \"%s\" lacks the scope %s", msm_principal_name(p), kind);
    return 403;
}

int msm_access_can(const msm_http_req_t *req, const char *kind, const char *resource)
{
    const msm_principal_t *p = msm_http_req_principal(req);
    return !p || msm_principal_can(p, kind, resource);
}

int64_t msm_access_take(msm_http_req_t *req, uint64_t n)
{
    msm_principal_t *p = msm_http_req_principal(req);
    return p ? msm_principal_take(p, n, msm_time_mono_ms()) : 0;
}
