/* SPDX-License-Identifier: MIT */
/* The HTTP benchmarks' shared publishing side (bench_http.h). */
#include "bench_http.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CURLM *bench_multi_new(int connections)
{
    CURLM *m = curl_multi_init();
    if (m) {
        /* Keep-alive: every request in flight finds an open connection in the cache. */
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)connections);
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)connections);
    }
    return m;
}

struct curl_slist *bench_json_headers(void)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    /* Appending returns the same list, or NULL. */
    if (h && (!curl_slist_append(h, "Expect:") ||
              (bench_auth() && !curl_slist_append(h, "Authorization: Bearer " BENCH_TOKEN)))) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h;
}

int bench_auth(void)
{
    const char *v = getenv("MSM_BENCH_AUTH");
    return v && *v && strcmp(v, "0") != 0;
}

int bench_write_tokens(const char *path)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)BENCH_TOKEN, strlen(BENCH_TOKEN), d);
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "[{\"name\":\"bench\",\"token_sha256\":\"%s\",\"scopes\":[\"admin\"]}]\n", hex);
    return fclose(f) == 0 ? 0 : -1;
}

CURL *bench_easy_new(const char *url, const struct curl_slist *headers, curl_write_callback write,
                     void *write_data, void *slot, long timeout_ms)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, write_data);
    curl_easy_setopt(e, CURLOPT_PRIVATE, slot);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    return e;
}

int bench_multi_turn(CURLM *multi, bench_done_cb *done, void *ctx)
{
    int running = 0, finished = 0, left;
    if (curl_multi_perform(multi, &running) != CURLM_OK)
        return -1;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        void *slot = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&slot);
        done(ctx, slot, msg->data.result);
        finished++;
    }
    return finished;
}
