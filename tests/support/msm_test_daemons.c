/* SPDX-License-Identifier: MIT */
/* Test support: msm's daemons as processes, and a JSON call to their API. */
#include "msm_test_daemons.h"

#include "msm_test.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const msm_test_daemon_names[MSM_TEST_NDAEMONS] = {"frontend", "scheduler",
                                                              "flowcontrol", "router"};

void msm_test_daemon_setup(msm_test_proc_t *p,
                           int which,
                           const char *bin,
                           const char *dir,
                           const char *redis_url,
                           const char *ns)
{
    memset(p, 0, sizeof(*p));
    p->port = msm_test_free_port();
    p->death_signal = SIGTERM; /* never outlive the test */
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, msm_test_daemon_names[which]);
    msm_test_proc_arg(p, "%s", bin);
    msm_test_proc_arg(p, "--redis.url=%s", redis_url);
    msm_test_proc_arg(p, "--namespace=%s", ns);
    msm_test_proc_arg(p, "--http.port=%d", p->port);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
    if (which == MSM_TEST_FRONTEND || which == MSM_TEST_ROUTER)
        msm_test_proc_arg(p, "--router.allow_networks=127.0.0.0/8,::1");
}

int msm_test_daemons_start(msm_test_proc_t *procs, int n, int ready_ms)
{
    for (int i = 0; i < n; i++) {
        if (msm_test_proc_start(&procs[i]) != 0) {
            fprintf(stderr, "could not start %s\n", procs[i].log);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (msm_test_proc_wait_ready(&procs[i], NULL, ready_ms) != 0) {
            fprintf(stderr, "not ready within %d ms; see %s\n", ready_ms, procs[i].log);
            return -1;
        }
    }
    return 0;
}

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

long msm_test_http_text(const char *method, const char *url, const char *body, char **text)
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
    *text = b.data;
    return status;
}

long msm_test_http_json(const char *method, const char *url, const char *body, json_t **out)
{
    char *text = NULL;
    long status = msm_test_http_text(method, url, body, &text);
    if (out)
        *out = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    return status;
}
