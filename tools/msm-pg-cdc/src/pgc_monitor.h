/* SPDX-License-Identifier: MIT */
/* A second, ordinary connection that looks at the slot every few seconds: how much WAL it
 * keeps behind the server's position (metrics) and where the server's WAL is (to refuse a
 * cursor from another database). On the loop's thread. */
#ifndef PGC_MONITOR_H
#define PGC_MONITOR_H

#include "pgc_stats.h"

#include "msm/loop.h"

#include <stdint.h>

typedef struct pgc_monitor_s pgc_monitor_t;

/** @brief A monitor (not started); strings are copied, @p stats borrowed. */
pgc_monitor_t *pgc_monitor_new(msm_loop_t *loop,
                               const char *conninfo,
                               const char *slot,
                               unsigned interval_ms,
                               unsigned connect_timeout_ms,
                               pgc_stats_t *stats);
void pgc_monitor_free(pgc_monitor_t *m);

/** @brief Looks now and every interval from then on. */
void pgc_monitor_start(pgc_monitor_t *m);

/** @brief The server's WAL position at the latest look. @returns 1 when known, else 0. */
int pgc_monitor_server_lsn(const pgc_monitor_t *m, uint64_t *lsn);

#endif
