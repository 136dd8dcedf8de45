/* SPDX-License-Identifier: MIT */
/* A Prometheus metrics registry: counter, gauge and histogram families with fixed label
 * names, cached children for hot paths (no label lookup per update), lock-free updates
 * from any thread, and rendering to the text exposition format 0.0.4. */
#ifndef MSM_METRICS_H
#define MSM_METRICS_H

#include <stddef.h>
#include <stdint.h>

/** A registry of metric families (one per daemon, usually owned by its HTTP server). */
typedef struct msm_metrics_s msm_metrics_t;
/** A family: one name, help text, type, label names; owned by its registry. */
typedef struct msm_metric_s msm_metric_t;
/** One time series of a family (one set of label values); owned by its family. */
typedef struct msm_metric_child_s msm_metric_child_t;

typedef enum {
    MSM_METRIC_COUNTER = 0,
    MSM_METRIC_GAUGE = 1,
    MSM_METRIC_HISTOGRAM = 2,
} msm_metric_type_t;

/** Most label names a family may have. */
#define MSM_METRICS_MAX_LABELS 8
/** Most buckets (excluding +Inf) a histogram may have. */
#define MSM_METRICS_MAX_BUCKETS 64

/**
 * The default latency buckets in seconds, 0.5 ms .. 10 s:
 * 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 (then +Inf).
 */
extern const double msm_metrics_default_buckets[];
extern const size_t msm_metrics_default_nbuckets;

/** @brief Creates an empty registry. @returns NULL when out of memory. */
msm_metrics_t *msm_metrics_new(void);

/**
 * @brief Frees the registry, its families and their children (safe with NULL).
 * @remark Every family and child pointer handed out becomes invalid; no thread may still be
 * updating one.
 */
void msm_metrics_free(msm_metrics_t *reg);

/**
 * @brief Registers (or finds) a counter family.
 * @param reg the registry
 * @param name metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*` (copied)
 * @param help one line of help text (copied; may be NULL or empty)
 * @param label_names NULL-terminated label names `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with
 *        `__`, no duplicates, at most MSM_METRICS_MAX_LABELS (copied); NULL = no labels
 * @param out receives the family, owned by @p reg
 * @returns MSM_OK; MSM_ERR_INVALID for a bad name or label name; MSM_ERR_EXISTS when @p name
 * is already registered with another type, other label names or other buckets (registering
 * the identical family again returns the existing one with MSM_OK); MSM_ERR_NOMEM.
 * @remark Thread-safe.
 */
int msm_metrics_counter(msm_metrics_t *reg, const char *name, const char *help,
                        const char *const *label_names, msm_metric_t **out);

/** @brief Registers (or finds) a gauge family; see msm_metrics_counter(). */
int msm_metrics_gauge(msm_metrics_t *reg, const char *name, const char *help,
                      const char *const *label_names, msm_metric_t **out);

/**
 * @brief Registers (or finds) a histogram family; see msm_metrics_counter().
 * @param buckets strictly increasing finite upper bounds (copied), without +Inf (added
 *        always); NULL with @p nbuckets 0 selects msm_metrics_default_buckets
 * @param nbuckets number of @p buckets, at most MSM_METRICS_MAX_BUCKETS
 * @remark The label name `le` is reserved for histograms (MSM_ERR_INVALID).
 */
int msm_metrics_histogram(msm_metrics_t *reg, const char *name, const char *help,
                          const char *const *label_names, const double *buckets,
                          size_t nbuckets, msm_metric_t **out);

/**
 * @brief The child for the label values given as NULL-terminated varargs, created on first
 * use. Look it up once and keep the pointer: it stays valid until the registry is freed.
 * @returns the child, or NULL when the number of values differs from the family's label
 * names, or when out of memory.
 * @remark Thread-safe (a mutex per family guards creation and lookup).
 */
msm_metric_child_t *msm_metric_labels(msm_metric_t *fam, ...);

/** @brief Same as msm_metric_labels() with a NULL-terminated array of values. */
msm_metric_child_t *msm_metric_labelsv(msm_metric_t *fam, const char *const *values);

/**
 * @brief The single child of a family without labels: no lookup, never NULL for such a
 * family. @returns NULL when the family has labels.
 */
msm_metric_child_t *msm_metric_solo(msm_metric_t *fam);

/** @brief The family's name (owned by the family). */
const char *msm_metric_name(const msm_metric_t *fam);

/* Updates: cheap, lock-free, callable from any thread. Calling an update of another type
 * (e.g. msm_counter_inc on a gauge child) is a programming error: it is ignored. A NULL
 * child is ignored too, so a failed lookup never crashes a hot path. */

/** @brief Adds one to a counter. */
void msm_counter_inc(msm_metric_child_t *c);
/** @brief Adds @p n to a counter (counters never go down). */
void msm_counter_add(msm_metric_child_t *c, uint64_t n);
/** @brief Sets a gauge. */
void msm_gauge_set(msm_metric_child_t *c, double v);
/** @brief Adds @p v (may be negative) to a gauge. */
void msm_gauge_add(msm_metric_child_t *c, double v);
/** @brief Adds one to a gauge. */
void msm_gauge_inc(msm_metric_child_t *c);
/** @brief Subtracts one from a gauge. */
void msm_gauge_dec(msm_metric_child_t *c);
/** @brief Records one observation @p v (e.g. seconds) in a histogram. */
void msm_histogram_observe(msm_metric_child_t *c, double v);

/* Reads (for tests and for daemons that report their own numbers). */

/** @brief A counter's current value (0 for NULL or another type). */
uint64_t msm_counter_value(const msm_metric_child_t *c);
/** @brief A gauge's current value (0 for NULL or another type). */
double msm_gauge_value(const msm_metric_child_t *c);
/** @brief A histogram's number of observations (0 for NULL or another type). */
uint64_t msm_histogram_count(const msm_metric_child_t *c);
/** @brief A histogram's sum of observations (0 for NULL or another type). */
double msm_histogram_sum(const msm_metric_child_t *c);

/**
 * A collector runs right before each render, on the rendering thread, to refresh gauges
 * whose values live elsewhere (backlog sizes, pool sizes, ...).
 */
typedef void msm_metrics_collect_cb(msm_metrics_t *reg, void *opaque);

/** @brief Adds a collector. @returns MSM_OK or MSM_ERR_NOMEM. @remark Thread-safe. */
int msm_metrics_add_collector(msm_metrics_t *reg, msm_metrics_collect_cb *cb, void *opaque);

/** @brief Removes a collector added with the same @p cb and @p opaque (if any). */
void msm_metrics_remove_collector(msm_metrics_t *reg, msm_metrics_collect_cb *cb, void *opaque);

/**
 * @brief Renders every family in the Prometheus text format 0.0.4 (`# HELP`, `# TYPE`, one
 * line per sample; histograms as cumulative `_bucket{le=…}` lines ending with `+Inf`, then
 * `_sum` and `_count`). Families appear in registration order, children in creation order;
 * a family with labels and no children is rendered as HELP/TYPE only.
 * @param reg the registry (collectors run first)
 * @param len receives the text length (may be NULL)
 * @returns a malloc'd NUL-terminated buffer the caller frees, or NULL when out of memory.
 * @remark Thread-safe with concurrent updates: each number is read atomically, and a
 * histogram's `_count` always equals its `+Inf` bucket.
 */
char *msm_metrics_render(msm_metrics_t *reg, size_t *len);

#endif
