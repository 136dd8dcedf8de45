/* SPDX-License-Identifier: MIT */
/* The HTTP benchmarks' shared publishing side (bench_http.h). */
#include "bench_http.h"

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
    if (h && !curl_slist_append(h, "Expect:")) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h;
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
