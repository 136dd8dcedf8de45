/* SPDX-License-Identifier: MIT */
/* Test support: one blocking HTTP request (msm_test_http.h). */
#include "msm_test_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len;
} body_t;

static size_t on_body(char *ptr, size_t size, size_t n, void *opaque)
{
    body_t *b = opaque;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, size * n);
    b->data = d;
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

long msm_test_http(const char *method, const char *url, const char *body, char **out)
{
    CURL *e = curl_easy_init();
    body_t b = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (out)
        *out = b.data;
    else
        free(b.data);
    return status;
}

long msm_test_http_json(const char *method, const char *url, const char *body, json_t **out)
{
    char *text = NULL;
    long status = msm_test_http(method, url, body, &text);
    if (out)
        *out = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    return status;
}
