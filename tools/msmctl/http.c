/* SPDX-License-Identifier: MIT */
/* msmctl's HTTP client: libcurl easy, blocking (a CLI has nothing else to do meanwhile), one
 * handle reused so that a long publish keeps its connection. Failures become one line: the
 * API's {"error":{"code","message"}} when the frontend sent one, curl's reason otherwise. */
#include "msmctl.h"

#include "msm/json.h"

#include <stdlib.h>
#include <string.h>

int ctl_http_init(ctl_t *c)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ctl_error(c, "cannot initialise libcurl");
        return -1;
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        curl_global_cleanup();
        ctl_error(c, "cannot initialise libcurl");
        return -1;
    }
    return 0;
}

void ctl_http_deinit(ctl_t *c)
{
    if (c->curl) {
        curl_easy_cleanup(c->curl);
        c->curl = NULL;
        curl_global_cleanup();
    }
}

void ctl_resp_free(ctl_resp_t *r)
{
    free(r->raw);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

char *ctl_escape(ctl_t *c, const char *segment)
{
    char *e = curl_easy_escape(c->curl, segment, 0);
    char *copy = e ? strdup(e) : NULL;
    curl_free(e);
    return copy;
}

static size_t on_body(char *p, size_t size, size_t n, void *opaque)
{
    ctl_resp_t *r = opaque;
    size_t len = size * n;
    char *b = realloc(r->raw, r->len + len + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, p, len);
    r->raw = b;
    r->len += len;
    r->raw[r->len] = '\0';
    return len;
}

/* "404 NOT_FOUND: no such topic" from the API's error body, or the first line of any other
 * body. */
static void report_http_error(ctl_t *c, const char *method, const char *url, const ctl_resp_t *r)
{
    json_t *err = r->json ? json_object_get(r->json, "error") : NULL;
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (code) {
        ctl_error(c, "%ld %s%s%s", r->status, code, msg && *msg ? ": " : "", msg ? msg : "");
        return;
    }
    char first[200] = "";
    if (r->raw)
        snprintf(first, sizeof(first), "%.*s", (int)strcspn(r->raw, "\r\n"), r->raw);
    ctl_error(c, "%s %s: HTTP %ld%s%s", method, url, r->status, *first ? ": " : "", first);
}

int ctl_http(ctl_t *c, const char *method, const char *path, const json_t *body, ctl_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t base_len = strlen(c->o.url);
    while (base_len > 0 && c->o.url[base_len - 1] == '/')
        base_len--;
    size_t url_len = base_len + strlen(path) + 1;
    char *url = malloc(url_len);
    char *payload = body ? msm_json_dump(body, NULL) : NULL;
    struct curl_slist *hdrs = NULL;
    int rc = -1;
    if (!url || (body && !payload)) {
        ctl_error(c, "out of memory");
        goto done;
    }
    snprintf(url, url_len, "%.*s%s", (int)base_len, c->o.url, path);
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->o.http_timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (c->o.token && *c->o.token) {
        char auth[512];
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->o.token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (payload) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        ctl_error(c, "cannot reach %.*s: %s", (int)base_len, c->o.url, curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    if (out->raw && out->len > 0)
        out->json = json_loadb(out->raw, out->len, JSON_DECODE_ANY, NULL);
    if (out->status < 200 || out->status > 299) {
        report_http_error(c, method, url, out);
        goto done;
    }
    if (out->len > 0 && !out->json) {
        ctl_error(c, "%s %s: the answer is not JSON", method, url);
        goto done;
    }
    rc = 0;
done:
    curl_slist_free_all(hdrs);
    free(payload);
    free(url);
    if (rc != 0)
        ctl_resp_free(out);
    return rc;
}

void ctl_print_raw(const ctl_resp_t *r)
{
    if (r->raw && r->len > 0) {
        fwrite(r->raw, 1, r->len, stdout);
        if (r->raw[r->len - 1] != '\n')
            fputc('\n', stdout);
    } else {
        fputs("{}\n", stdout);
    }
}
