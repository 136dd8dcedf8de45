/* SPDX-License-Identifier: MIT */
/* msmctl internals: the options every command shares one struct for (each command's
 * settings table picks its own), the blocking HTTP client over libcurl easy, table output,
 * and the command entry points. */
#ifndef MSMCTL_H
#define MSMCTL_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Exit statuses. */
#define CTL_EXIT_OK    0
#define CTL_EXIT_ERROR 1 /* the request failed (HTTP error, unreachable, bad answer) */
#define CTL_EXIT_USAGE 2 /* bad command line */

/* "Not given" for optional integers: the server's default applies. */
#define CTL_UNSET (-1)

/* Every option of every command; a command's table names the ones it takes. */
typedef struct {
    /* global */
    char *url;
    bool json;
    int http_timeout_ms;
    char *token; /* bearer token, or NULL */
    /* topic */
    char *schema_subject;
    /* sub */
    char *topic;
    char *endpoint;
    int max_concurrency;
    int timeout_ms;
    int max_attempts;
    bool ordered;
    char *filter;
    int rate_limit_per_s;
    int priority;
    int min_backoff_ms;
    int max_backoff_ms;
    bool watch;
    int interval_ms;
    int watch_count;
    /* publish */
    char *data;
    char *key;
    char *ordering_key;
    int delay_ms;
    char **attr;
    char *idempotency_key;
    int count;
    double rate;
    int batch_size;
    bool progress;
    /* tasks, dlq */
    char *state;
    int limit;
    /* schema */
    char *schema;
    char *schema_type;
    char *message_name;
    /* schedule */
    char *cron;
    long long every_ms;
    char *timezone;
    char *catch_up;
    /* cdc notify */
    char *partition;
    long long sequence;
} ctl_opts_t;

typedef struct {
    ctl_opts_t o;
    const char *cmd_name; /* "sub create", for messages */
    CURL *curl;           /* one handle: keep-alive across requests */
} ctl_t;

/* ---- output ---- */

/** Prints "msmctl: <cmd>: <message>" as one line on stderr. */
void ctl_error(const ctl_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- HTTP (http.c) ---- */

typedef struct {
    long status;
    char *raw; /* the body, NUL-terminated */
    size_t len;
    json_t *json; /* the body parsed, or NULL */
} ctl_resp_t;

/** Prepares the shared handle. @returns 0 or -1 (message printed). */
int ctl_http_init(ctl_t *c);
void ctl_http_deinit(ctl_t *c);

/**
 * @brief One request to the frontend: @p path is appended to --url; @p body (may be NULL)
 * is sent as application/json.
 * @returns 0 on a 2xx answer (caller frees @p out with ctl_resp_free()); otherwise prints
 * the one-line reason (the API's error code and message when it sent one) and returns -1.
 */
int ctl_http(ctl_t *c, const char *method, const char *path, const json_t *body, ctl_resp_t *out);
void ctl_resp_free(ctl_resp_t *r);

/** @brief Percent-escapes one path segment into a malloc'd string (NULL on failure). */
char *ctl_escape(ctl_t *c, const char *segment);

/** @brief Prints the raw answer (the --json output). */
void ctl_print_raw(const ctl_resp_t *r);

/* ---- tables (table.c) ---- */

/** @brief A value as table text: strings as is, null as "-", others as compact JSON. */
char *ctl_cell(const json_t *v);

/**
 * @brief Prints objects as an aligned table: one column per name in @p columns (upper-cased
 * headers) that at least one row has, then "(none)" when there are no rows.
 */
void ctl_print_table(FILE *out, json_t *rows, const char *const *columns);

/** @brief Prints an object's members as "name: value" lines, names aligned. */
void ctl_print_object(FILE *out, const json_t *obj, const char *const *skip);

/**
 * @brief Finds the array of items in a list answer: the answer itself when it is an array,
 * else its member @p member, else its first array member; an object of objects becomes an
 * array of them with "name" added. @returns a new reference (NULL when none).
 */
json_t *ctl_list_items(json_t *answer, const char *member);

/* ---- resources (cmd_topic_sub.c) ---- */

/** @brief GET, PUT (@p body) or DELETE "/v1/<collection>/<name>", printing the answer (or
 *  "<kind> <name> <done_word>" first when @p done_word). @returns an exit status. */
int ctl_named(ctl_t *c, const char *method, const char *collection, const char *name,
              const json_t *body, const char *done_word);
/**
 * @brief GET "/v1/<collection>" printed as a table of @p columns (or raw with --json); the
 * rows are the answer's member @p member (NULL: named as the collection). @p shape (may be
 * NULL) adjusts each row for display. @returns the exit status.
 */
int ctl_list(ctl_t *c, const char *collection, const char *member, const char *const *columns,
             void (*shape)(json_t *row));

/** @brief One event from --data (required), --key, --ordering-key, --delay-ms, --priority
 *  and --attr (cmd_publish.c); NULL with the reason printed. */
json_t *ctl_event_json(ctl_t *c);

/* ---- commands ---- */

int ctl_topic_create(ctl_t *c, const char **args, int nargs);
int ctl_topic_list(ctl_t *c, const char **args, int nargs);
int ctl_topic_get(ctl_t *c, const char **args, int nargs);
int ctl_topic_delete(ctl_t *c, const char **args, int nargs);
int ctl_sub_create(ctl_t *c, const char **args, int nargs);
int ctl_sub_list(ctl_t *c, const char **args, int nargs);
int ctl_sub_get(ctl_t *c, const char **args, int nargs);
int ctl_sub_delete(ctl_t *c, const char **args, int nargs);
int ctl_sub_stats(ctl_t *c, const char **args, int nargs);
int ctl_sub_pause(ctl_t *c, const char **args, int nargs);
int ctl_sub_resume(ctl_t *c, const char **args, int nargs);
int ctl_publish(ctl_t *c, const char **args, int nargs);
int ctl_tasks(ctl_t *c, const char **args, int nargs);
int ctl_dlq_list(ctl_t *c, const char **args, int nargs);
int ctl_dlq_replay(ctl_t *c, const char **args, int nargs);
int ctl_canary_promote(ctl_t *c, const char **args, int nargs);
int ctl_canary_rollback(ctl_t *c, const char **args, int nargs);
int ctl_schema_register(ctl_t *c, const char **args, int nargs);
int ctl_schema_list(ctl_t *c, const char **args, int nargs);
int ctl_cdc_list(ctl_t *c, const char **args, int nargs);
int ctl_cdc_get(ctl_t *c, const char **args, int nargs);
int ctl_cdc_notify(ctl_t *c, const char **args, int nargs);
int ctl_up(ctl_t *c, const char **args, int nargs);
int ctl_schedule_put(ctl_t *c, const char **args, int nargs);
int ctl_schedule_list(ctl_t *c, const char **args, int nargs);
int ctl_schedule_get(ctl_t *c, const char **args, int nargs);
int ctl_schedule_delete(ctl_t *c, const char **args, int nargs);

/** @brief Reads "@FILE" arguments: returns a malloc'd copy of the text or file contents,
 *  or NULL with the reason printed. */
char *ctl_text_arg(ctl_t *c, const char *flag, const char *value);

#endif
