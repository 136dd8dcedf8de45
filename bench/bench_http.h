/* SPDX-License-Identifier: MIT */
/* What the HTTP benchmarks' publishing side shares: keep-alive easy handles on one curl
 * multi handle, and one turn of driving them. */
#ifndef BENCH_HTTP_H
#define BENCH_HTTP_H

#include <curl/curl.h>

/** @brief A multi handle keeping up to @p connections open to one host (keep-alive). */
CURLM *bench_multi_new(int connections);

/** The bearer token of a run with MSM_BENCH_AUTH set (an admin principal). */
#define BENCH_TOKEN "msm-bench-token"

/** @brief The headers of a JSON POST, without curl's "Expect: 100-continue" round trip (a
 *  publish client sends its body at once), with the bearer token when bench_auth(). NULL
 *  when out of memory. */
struct curl_slist *bench_json_headers(void);

/** @brief Whether MSM_BENCH_AUTH asks for the daemons to run with auth.tokens. */
int bench_auth(void);

/** @brief Writes a token file naming BENCH_TOKEN's principal (admin) to @p path. */
int bench_write_tokens(const char *path);

/** @brief An easy handle for POSTs to @p url: @p write gets the answer, @p slot comes back
 *  in bench_multi_turn()'s callback. NULL when out of memory. */
CURL *bench_easy_new(const char *url, const struct curl_slist *headers, curl_write_callback write,
                     void *write_data, void *slot, long timeout_ms);

/** Called for each finished transfer with the @p slot given to bench_easy_new(). */
typedef void bench_done_cb(void *ctx, void *slot, CURLcode result);

/** @brief Drives the transfers once and calls @p done for each that finished.
 *  @returns how many finished, or -1 when curl_multi_perform() failed. */
int bench_multi_turn(CURLM *multi, bench_done_cb *done, void *ctx);

#endif
