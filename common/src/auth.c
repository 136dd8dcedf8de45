/* SPDX-License-Identifier: MIT */
/* Principals, scopes and publish quotas (msm/auth.h). */
#include "msm/auth.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msm_principal_s {
    char *p_name;
    unsigned char p_digest[SHA256_DIGEST_LENGTH];
    char **p_scopes;
    size_t p_nscopes;
    double p_rate;   /* publish_per_s; 0 = no quota */
    double p_tokens; /* the bucket; may be negative (a batch owed) */
    uint64_t p_refilled_ms;
};

struct msm_auth_s {
    msm_principal_t *a_principals;
    size_t a_n;
};

static const char *const kinds_with_pattern[] = {"publish", "subscribe", "replay", NULL};
static const char *const kinds_alone[] = {"admin", "schemas", NULL};

int msm_auth_glob(const char *pattern, const char *name)
{
    /* Iterative '*' matching with one backtrack point: linear for the patterns we allow. */
    const char *star = NULL, *resume = NULL;
    while (*name) {
        if (*pattern == '*') {
            star = pattern++;
            resume = name;
        } else if (*pattern == *name) {
            pattern++;
            name++;
        } else if (star) {
            pattern = star + 1;
            name = ++resume;
        } else {
            return 0;
        }
    }
    while (*pattern == '*')
        pattern++;
    return *pattern == '\0';
}

int msm_auth_scope_valid(const char *s)
{
    for (int i = 0; kinds_alone[i]; i++)
        if (strcmp(s, kinds_alone[i]) == 0)
            return 1;
    for (int i = 0; kinds_with_pattern[i]; i++) {
        size_t n = strlen(kinds_with_pattern[i]);
        if (strncmp(s, kinds_with_pattern[i], n) == 0 && s[n] == ':' && s[n + 1] != '\0')
            return 1;
    }
    return 0;
}

static int hex_digest(const char *hex, unsigned char out[SHA256_DIGEST_LENGTH])
{
    if (!hex || strlen(hex) != 2 * SHA256_DIGEST_LENGTH)
        return -1;
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

static void principal_free(msm_principal_t *p)
{
    free(p->p_name);
    for (size_t i = 0; i < p->p_nscopes; i++)
        free(p->p_scopes[i]);
    free(p->p_scopes);
}

void msm_auth_free(msm_auth_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->a_n; i++)
        principal_free(&a->a_principals[i]);
    free(a->a_principals);
    free(a);
}

/* One entry of the file into @p p. @returns 0, or -1 with a reason. */
static int load_one(const json_t *e, size_t index, msm_principal_t *p, char *err, size_t n)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)e, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "token_sha256") && strcmp(key, "scopes") &&
            strcmp(key, "publish_per_s")) {
            snprintf(err, n, "entry %zu: unknown key \"%s\"", index, key);
            return -1;
        }
    }
    const char *name = json_string_value(json_object_get(e, "name"));
    if (!name || !*name) {
        snprintf(err, n, "entry %zu: \"name\" must be a non-empty string", index);
        return -1;
    }
    if (hex_digest(json_string_value(json_object_get(e, "token_sha256")), p->p_digest) != 0) {
        snprintf(err, n, "entry %zu (%s): \"token_sha256\" must be 64 hex digits", index, name);
        return -1;
    }
    json_t *rate = json_object_get(e, "publish_per_s");
    if (rate && (!json_is_number(rate) || json_number_value(rate) <= 0)) {
        snprintf(err, n, "entry %zu (%s): \"publish_per_s\" must be a number > 0", index, name);
        return -1;
    }
    p->p_rate = rate ? json_number_value(rate) : 0;
    p->p_tokens = p->p_rate;
    json_t *scopes = json_object_get(e, "scopes");
    if (!json_is_array(scopes)) {
        snprintf(err, n, "entry %zu (%s): \"scopes\" must be an array", index, name);
        return -1;
    }
    if (!(p->p_name = strdup(name)) ||
        !(p->p_scopes = calloc(json_array_size(scopes) + 1, sizeof(char *)))) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    size_t i;
    json_t *s;
    json_array_foreach(scopes, i, s)
    {
        const char *scope = json_string_value(s);
        if (!scope || !msm_auth_scope_valid(scope)) {
            snprintf(err, n,
                     "entry %zu (%s): scope %zu is not admin, schemas, publish:<pattern>, "
                     "subscribe:<pattern> or replay:<pattern>",
                     index, name, i);
            return -1;
        }
        if (!(p->p_scopes[p->p_nscopes] = strdup(scope))) {
            snprintf(err, n, "out of memory");
            return -1;
        }
        p->p_nscopes++;
    }
    return 0;
}

msm_auth_t *msm_auth_load(const char *path, char *err, size_t n)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(err, n, "%s: %s (line %d)", path, je.text, je.line);
        return NULL;
    }
    msm_auth_t *a = calloc(1, sizeof(*a));
    if (!json_is_array(root)) {
        snprintf(err, n, "%s: must be a JSON array of principals", path);
        goto fail;
    }
    if (!a || !(a->a_principals = calloc(json_array_size(root) + 1, sizeof(msm_principal_t)))) {
        snprintf(err, n, "out of memory");
        goto fail;
    }
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e)
    {
        msm_principal_t *p = &a->a_principals[a->a_n++];
        char why[256];
        if (!json_is_object(e)) {
            snprintf(err, n, "%s: entry %zu is not an object", path, i);
            goto fail;
        }
        if (load_one(e, i, p, why, sizeof(why)) != 0) {
            snprintf(err, n, "%s: %s", path, why);
            goto fail;
        }
        for (size_t j = 0; j + 1 < a->a_n; j++) {
            if (strcmp(a->a_principals[j].p_name, p->p_name) == 0 ||
                memcmp(a->a_principals[j].p_digest, p->p_digest, SHA256_DIGEST_LENGTH) == 0) {
                snprintf(err, n, "%s: entries %zu and %zu share a name or a token", path, j, i);
                goto fail;
            }
        }
    }
    json_decref(root);
    return a;
fail:
    json_decref(root);
    msm_auth_free(a);
    return NULL;
}

size_t msm_auth_count(const msm_auth_t *a)
{
    return a ? a->a_n : 0;
}

msm_principal_t *msm_auth_by_token(msm_auth_t *a, const char *token, size_t len)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, len, d);
    msm_principal_t *found = NULL;
    for (size_t i = 0; i < a->a_n; i++) {
        /* Every digest is compared, match or not: the time says nothing about which. */
        int same = CRYPTO_memcmp(d, a->a_principals[i].p_digest, sizeof(d)) == 0;
        if (same)
            found = &a->a_principals[i];
    }
    return found;
}

msm_principal_t *msm_auth_by_name(msm_auth_t *a, const char *name)
{
    for (size_t i = 0; a && name && i < a->a_n; i++)
        if (strcmp(a->a_principals[i].p_name, name) == 0)
            return &a->a_principals[i];
    return NULL;
}

const char *msm_principal_name(const msm_principal_t *p)
{
    return p->p_name;
}

int msm_principal_can(const msm_principal_t *p, const char *kind, const char *resource)
{
    size_t klen = strlen(kind);
    for (size_t i = 0; i < p->p_nscopes; i++) {
        const char *s = p->p_scopes[i];
        if (strcmp(s, "admin") == 0)
            return 1;
        if (strncmp(s, kind, klen) != 0)
            continue;
        if (s[klen] == '\0')
            return 1; /* a kind without a pattern ("schemas") */
        if (s[klen] == ':' && (!resource || msm_auth_glob(s + klen + 1, resource)))
            return 1;
    }
    return 0;
}

int64_t msm_principal_take(msm_principal_t *p, uint64_t n, uint64_t now_ms)
{
    if (p->p_rate <= 0)
        return 0;
    if (p->p_refilled_ms && now_ms > p->p_refilled_ms) {
        p->p_tokens += p->p_rate * (double)(now_ms - p->p_refilled_ms) / 1000.0;
        if (p->p_tokens > p->p_rate)
            p->p_tokens = p->p_rate;
    }
    p->p_refilled_ms = now_ms;
    if (p->p_tokens <= 0) {
        double wait = (1.0 - p->p_tokens) / p->p_rate * 1000.0;
        return wait < 1 ? 1 : (int64_t)wait;
    }
    p->p_tokens -= (double)n;
    return 0;
}
