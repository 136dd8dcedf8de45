/* SPDX-License-Identifier: MIT */
/* The range API (API.md "CDC", pull): GET /changes?partition=P&after=SEQ&limit=N answers
 * {"changes":[…],"has_more":bool}. `after` acknowledges everything up to SEQ. With nothing
 * to serve the request waits up to range.wait_ms for changes (a long poll). On the loop's
 * thread. */
#ifndef PGC_RANGE_H
#define PGC_RANGE_H

#include "pgc_backlog.h"
#include "pgc_monitor.h"
#include "pgc_repl.h"
#include "pgc_stats.h"

#include "msm/http_server.h"

#include <stddef.h>

#define PGC_RANGE_PATH "/changes"

typedef struct pgc_range_s pgc_range_t;

typedef struct {
    const char *partition;     /**< the one partition served (copied) */
    unsigned default_limit;    /**< when the request has no limit */
    unsigned max_limit;        /**< a larger limit is a 400 */
    unsigned wait_ms;          /**< longest wait for changes; 0 = answer at once */
    size_t max_response_bytes; /**< an answer stops growing past it (one change at least) */
} pgc_range_conf_t;

/** @brief The handler's state; everything but @p conf is borrowed. NULL when out of memory. */
pgc_range_t *pgc_range_new(msm_loop_t *loop,
                           const pgc_range_conf_t *conf,
                           pgc_backlog_t *backlog,
                           pgc_stats_t *stats);

/** @brief Sets the stream and monitor it consults (borrowed; @p monitor may be NULL). */
void pgc_range_attach(pgc_range_t *rg, pgc_repl_t *repl, pgc_monitor_t *monitor);

/** @brief The route handler (msm_http_handler_cb) for GET PGC_RANGE_PATH; opaque = @p rg. */
void pgc_range_handle(msm_http_req_t *req, void *opaque);

/** @brief Changes arrived or the stream went down: waiting requests answer if they can. */
void pgc_range_news(pgc_range_t *rg);

/** @brief Answers every waiting request now and answers at once from then on. */
void pgc_range_stop(pgc_range_t *rg);

/** @brief Requests waiting for changes. */
size_t pgc_range_waiting(const pgc_range_t *rg);

/** @brief Answers what still waits, then frees. Safe with NULL. */
void pgc_range_free(pgc_range_t *rg);

#endif
