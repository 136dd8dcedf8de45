/* SPDX-License-Identifier: MIT */
/* msm-example-lambda: the reference lambda of the demo, the tests and the benchmarks. It
 * handles every subscription ("*"), can fail on purpose (--fail-rate, --fatal-rate, and
 * --fail-attr for poison events), answer late without blocking its loop (--latency-ms: a
 * deferred answer from a loop timer), play an overloaded endpoint (--max-concurrent: 429
 * without Retry-After), block like slow synchronous code (--busy-ms, for --threads and the
 * supervisor's autoscaling) and record each invocation as one JSON line (--record FILE). It
 * also shows how a lambda adds its own flags (msm_lambda_add_conf) and hooks. With
 * --threads its state is shared by the handler threads under one mutex. */
#include "msm/lambda.h"
#include "msm/time.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *record;       /* path of the JSON-lines record, or NULL */
    double fail_rate;   /* share of invocations answered MSM_RETRY */
    double fatal_rate;  /* share answered MSM_FATAL */
    int latency_ms;     /* answer this late */
    long long seed;     /* 0: seeded from the clock and pid */
    int max_concurrent; /* 0: no limit; else answer 429 while this many are in progress */
    char *fail_attr;    /* "NAME=VALUE": events with that attribute always answer retry */
    int busy_ms;        /* block the handler this long (synchronous work) */
    /* runtime, not settings */
    int record_fd;
    uint64_t rng;
    size_t in_progress;     /* invocations waiting for their --latency-ms timer */
    char *fail_name;        /* fail_attr's NAME (owned), NULL when unset */
    const char *fail_value; /* fail_attr's VALUE (points into fail_attr) */
    pthread_mutex_t mu;     /* rng and in_progress, when handlers run on threads */
} example_t;

static const msm_conf_def_t example_conf[] = {
    MSM_CONF_STR(
        "record", example_t, record, NULL, "append one JSON line per invocation to this file"),
    MSM_CONF_DOUBLE(
        "fail-rate", example_t, fail_rate, 0.0, 0.0, 1.0, "share of invocations that answer retry"),
    MSM_CONF_DOUBLE("fatal-rate",
                    example_t,
                    fatal_rate,
                    0.0,
                    0.0,
                    1.0,
                    "share of invocations that answer fatal"),
    MSM_CONF_INT("latency-ms",
                 example_t,
                 latency_ms,
                 0,
                 0,
                 3600000,
                 "answer this many ms after the push arrived (the loop keeps serving)"),
    MSM_CONF_INT(
        "seed", example_t, seed, 0, 0, INT64_MAX, "seed of the failure draws (0: from the clock)"),
    MSM_CONF_INT("max-concurrent",
                 example_t,
                 max_concurrent,
                 0,
                 0,
                 1000000,
                 "while this many invocations are in progress, answer 429 without Retry-After "
                 "(an overloaded endpoint; 0: no limit)"),
    MSM_CONF_STR("fail-attr",
                 example_t,
                 fail_attr,
                 NULL,
                 "NAME=VALUE: an event with attribute NAME equal to VALUE always answers retry "
                 "(a poison event)"),
    MSM_CONF_INT("busy-ms",
                 example_t,
                 busy_ms,
                 0,
                 0,
                 3600000,
                 "block in the handler this many ms, like synchronous work (use --threads to "
                 "keep serving meanwhile; not with --latency-ms)"),
};

/* One invocation waiting for its --latency-ms timer. */
typedef struct {
    msm_timer_t p_timer;
    msm_ctx_t *p_ctx;
    example_t *p_ex;
    msm_status_t p_status;
    int64_t p_received_us;
    size_t p_in_flight;
} pending_t;

/* xorshift64*: enough for failure draws, and reproducible with --seed. */
static double next_uniform(example_t *ex)
{
    uint64_t x = ex->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ex->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static msm_status_t draw_status(example_t *ex)
{
    double u = next_uniform(ex);
    if (u < ex->fatal_rate)
        return MSM_FATAL;
    if (u < ex->fatal_rate + ex->fail_rate)
        return MSM_RETRY;
    return MSM_OK;
}

static const char *status_word(msm_status_t st)
{
    return st == MSM_OK ? "ok" : (st == MSM_FATAL ? "fatal" : "retry");
}

/* ---- the --record line, written without a JSON library ---- */

/* One line being built: on the stack, moved to the heap only for very long strings. */
typedef struct {
    char *rl_buf;
    size_t rl_len, rl_cap;
    int rl_nomem;
    char rl_inline[512];
} record_line_t;

static void line_init(record_line_t *l)
{
    l->rl_buf = l->rl_inline;
    l->rl_len = 0;
    l->rl_cap = sizeof(l->rl_inline);
    l->rl_nomem = 0;
}

static void line_deinit(record_line_t *l)
{
    if (l->rl_buf != l->rl_inline)
        free(l->rl_buf);
    l->rl_buf = NULL;
}

/* Room for @p n more bytes. @returns 0, or -1 (out of memory, remembered). */
static int line_room(record_line_t *l, size_t n)
{
    if (l->rl_nomem)
        return -1;
    if (l->rl_cap - l->rl_len >= n)
        return 0;
    size_t cap = (l->rl_len + n) * 2;
    char *buf = l->rl_buf == l->rl_inline ? malloc(cap) : realloc(l->rl_buf, cap);
    if (!buf) {
        l->rl_nomem = 1;
        return -1;
    }
    if (l->rl_buf == l->rl_inline)
        memcpy(buf, l->rl_inline, l->rl_len);
    l->rl_buf = buf;
    l->rl_cap = cap;
    return 0;
}

static void line_put(record_line_t *l, const char *s, size_t n)
{
    if (line_room(l, n) == 0) {
        memcpy(l->rl_buf + l->rl_len, s, n);
        l->rl_len += n;
    }
}

/* The length of the valid UTF-8 sequence at @p s (first byte >= 0x80), 0 when invalid. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c >= 0xc2 && c <= 0xdf
                   ? 2
                   : (c >= 0xe0 && c <= 0xef ? 3 : (c >= 0xf0 && c <= 0xf4 ? 4 : 0));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* the NUL ends it too */
            return 0;
    }
    /* overlong, surrogates, above U+10FFFF */
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* @p s as a JSON string: UTF-8 kept as it is, a byte that is not UTF-8 as U+FFFD. */
static void line_put_str(record_line_t *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    line_put(l, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        line_put(l, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        if (*p >= 0x80) {
            size_t n = utf8_seq_len(p);
            line_put(l, n ? (const char *)p : "\\ufffd", n ? n : 6);
            p += n ? n : 1;
        } else if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p++};
            line_put(l, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 0xf]};
            line_put(l, esc, 6);
            p++;
        }
    }
    line_put(l, "\"", 1);
}

/* ,"name":"value" (null when empty, with @p empty_is_null). */
static void
line_put_member_str(record_line_t *l, const char *name, const char *v, int empty_is_null)
{
    line_put(l, ",\"", 2);
    line_put(l, name, strlen(name));
    line_put(l, "\":", 2);
    if (empty_is_null && !*v)
        line_put(l, "null", 4);
    else
        line_put_str(l, v);
}

static void line_put_member_int(record_line_t *l, const char *name, long long v)
{
    char digits[24];
    int n = snprintf(digits, sizeof(digits), "%lld", v);
    line_put(l, ",\"", 2);
    line_put(l, name, strlen(name));
    line_put(l, "\":", 2);
    line_put(l, digits, (size_t)n);
}

/* The record line of @p ev, without its result (added once the answer is known).
 * @returns 0 when not recording (nothing to end). */
static int record_begin(const example_t *ex,
                        const msm_event_t *ev,
                        int64_t received_us,
                        size_t in_flight,
                        record_line_t *l)
{
    if (ex->record_fd < 0)
        return 0;
    line_init(l);
    line_put(l, "{\"id\":", 6);
    line_put_str(l, msm_event_id(ev));
    line_put_member_str(l, "subscription", msm_event_subscription(ev), 0);
    line_put_member_int(l, "attempt", msm_event_attempt(ev));
    line_put_member_str(l, "key", msm_event_key(ev), 1);
    line_put_member_str(l, "ordering_key", msm_event_ordering_key(ev), 1);
    line_put_member_int(l, "received_ms", received_us / 1000);
    line_put_member_int(l, "received_us", received_us);
    line_put_member_int(l, "deadline_ms", msm_event_deadline_ms(ev));
    line_put_member_int(l, "in_flight", (long long)in_flight);
    return 1;
}

/* One line, one write(): with O_APPEND, lines from any number of writers never interleave. */
static void record_end(const example_t *ex, int begun, record_line_t *l, msm_status_t told)
{
    if (!begun)
        return;
    line_put_member_str(l, "result", status_word(told), 0);
    line_put(l, "}\n", 2);
    if (l->rl_nomem)
        msm_log(MSM_LOG_ERROR, "example", "--record: out of memory");
    else if (write(ex->record_fd, l->rl_buf, l->rl_len) != (ssize_t)l->rl_len)
        msm_log(MSM_LOG_ERROR, "example", "--record: write failed: %s", strerror(errno));
    line_deinit(l);
}

/* A line for an invocation answered at once. */
static void record(const example_t *ex,
                   const msm_event_t *ev,
                   int64_t received_us,
                   size_t in_flight,
                   msm_status_t told)
{
    record_line_t l;
    record_end(ex, record_begin(ex, ev, received_us, in_flight, &l), &l, told);
}

static void on_latency_elapsed(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    pending_t *p = opaque;
    /* The event dies in msm_ctx_complete(): take the line first, the result after, so the
     * record says what the router was told (retry if the deadline passed meanwhile). */
    record_line_t line;
    int begun =
        record_begin(p->p_ex, msm_ctx_event(p->p_ctx), p->p_received_us, p->p_in_flight, &line);
    msm_status_t told = msm_ctx_complete(p->p_ctx, p->p_status);
    record_end(p->p_ex, begun, &line, told);
    p->p_ex->in_progress--;
    free(p);
}

static void on_cancel(msm_ctx_t *ctx, void *opaque)
{
    (void)ctx;
    pending_t *p = opaque;
    msm_loop_timer_stop(msm_ctx_loop(p->p_ctx), &p->p_timer);
    p->p_ex->in_progress--;
    free(p);
}

static int is_poison(const example_t *ex, const msm_event_t *ev)
{
    const char *v = ex->fail_name ? msm_event_attr(ev, ex->fail_name) : NULL;
    return v && strcmp(v, ex->fail_value) == 0;
}

/* What the invocation will answer, with the message a failure carries. */
static msm_status_t decide(example_t *ex, const msm_event_t *ev, msm_ctx_t *ctx)
{
    /* Drawn for poison events too, so --seed gives the others the same draws either way. */
    msm_status_t st = draw_status(ex);
    if (is_poison(ex, ev)) {
        msm_ctx_set_error(ctx, "example: poison event (--fail-attr %s)", ex->fail_attr);
        return MSM_RETRY;
    }
    if (st == MSM_RETRY)
        msm_ctx_set_error(ctx, "example: simulated transient failure (--fail-rate)");
    else if (st == MSM_FATAL)
        msm_ctx_set_error(ctx, "example: simulated fatal failure (--fatal-rate)");
    return st;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* --busy-ms: blocks, then answers; the shared state is touched under the mutex only. */
static msm_status_t handle_busy(example_t *ex, const msm_event_t *ev, msm_ctx_t *ctx)
{
    int64_t received_us = msm_time_unix_us();
    pthread_mutex_lock(&ex->mu);
    size_t in_flight = ++ex->in_progress;
    msm_status_t st = decide(ex, ev, ctx);
    pthread_mutex_unlock(&ex->mu);
    sleep_ms(ex->busy_ms);
    pthread_mutex_lock(&ex->mu);
    ex->in_progress--;
    pthread_mutex_unlock(&ex->mu);
    record(ex, ev, received_us, in_flight, msm_ctx_remaining_ms(ctx) > 0 ? st : MSM_RETRY);
    return st;
}

static msm_status_t handle(const msm_event_t *ev, msm_ctx_t *ctx)
{
    example_t *ex = msm_ctx_opaque(ctx);
    if (ex->busy_ms > 0)
        return handle_busy(ex, ev, ctx);
    int64_t received_us = msm_time_unix_us();
    /* This one included: the concurrency the endpoint is offered, refused or not. */
    size_t in_flight = ex->in_progress + 1;
    if (ex->max_concurrent > 0 && ex->in_progress >= (size_t)ex->max_concurrent) {
        /* An overloaded endpoint that cannot say for how long: 429, no Retry-After. */
        msm_ctx_set_overloaded(ctx);
        msm_ctx_set_error(ctx, "example: %zu invocations in progress (--max-concurrent)",
                          ex->in_progress);
        record(ex, ev, received_us, in_flight, MSM_RETRY);
        return MSM_RETRY;
    }
    msm_status_t st = decide(ex, ev, ctx);
    if (ex->latency_ms <= 0) {
        record(ex, ev, received_us, in_flight, st);
        return st;
    }
    pending_t *p = calloc(1, sizeof(*p));
    if (!p) {
        record(ex, ev, received_us, in_flight, MSM_RETRY);
        return MSM_RETRY;
    }
    p->p_ctx = ctx;
    p->p_ex = ex;
    p->p_status = st;
    p->p_received_us = received_us;
    p->p_in_flight = in_flight;
    ex->in_progress++;
    msm_timer_init(&p->p_timer);
    msm_ctx_on_cancel(ctx, on_cancel, p);
    msm_loop_timer_start(msm_ctx_loop(ctx), &p->p_timer, (uint64_t)ex->latency_ms,
                         on_latency_elapsed, p);
    return MSM_LATER;
}

/* --fail-attr NAME=VALUE: NAME must not be empty; VALUE may be. */
static int parse_fail_attr(example_t *ex)
{
    const char *eq = ex->fail_attr ? strchr(ex->fail_attr, '=') : NULL;
    if (!ex->fail_attr || !*ex->fail_attr)
        return 0;
    if (!eq || eq == ex->fail_attr) {
        msm_log(MSM_LOG_ERROR, "example", "--fail-attr must be NAME=VALUE, not \"%s\"",
                ex->fail_attr);
        return -1;
    }
    if (!(ex->fail_name = strndup(ex->fail_attr, (size_t)(eq - ex->fail_attr)))) {
        msm_log(MSM_LOG_ERROR, "example", "--fail-attr: out of memory");
        return -1;
    }
    ex->fail_value = eq + 1;
    return 0;
}

static int on_start(msm_lambda_t *l, void *opaque)
{
    example_t *ex = opaque;
    if (msm_lambda_threads(l) > 0 && (ex->busy_ms == 0 || ex->latency_ms > 0 ||
                                      ex->max_concurrent > 0)) {
        /* Those paths keep state on the loop (timers, counters) without the mutex. */
        msm_log(MSM_LOG_ERROR, "example", "with --threads, use --busy-ms (without --latency-ms "
                                          "or --max-concurrent)");
        return -1;
    }
    ex->rng = ex->seed ? (uint64_t)ex->seed
                       : (uint64_t)msm_time_unix_ms() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    if (ex->rng == 0)
        ex->rng = 1;
    if (ex->fail_rate + ex->fatal_rate > 1.0) {
        msm_log(MSM_LOG_ERROR, "example", "--fail-rate plus --fatal-rate must not exceed 1");
        return -1;
    }
    if (parse_fail_attr(ex) != 0)
        return -1;
    if (!ex->record)
        return 0;
    ex->record_fd = open(ex->record, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (ex->record_fd < 0) {
        msm_log(MSM_LOG_ERROR, "example", "--record %s: %s", ex->record, strerror(errno));
        return -1;
    }
    return 0;
}

static int on_stop(msm_lambda_t *l, void *opaque)
{
    (void)l;
    example_t *ex = opaque;
    if (ex->record_fd >= 0)
        close(ex->record_fd);
    ex->record_fd = -1;
    return 0;
}

int main(int argc, char **argv)
{
    example_t ex = {.record_fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};
    msm_lambda_t *l = msm_lambda_new("msm-example-lambda");
    if (!l || msm_lambda_on(l, "*", handle) != MSM_OK ||
        msm_lambda_add_conf(l, example_conf, MSM_CONF_COUNT(example_conf), &ex, sizeof(ex)) !=
            MSM_OK ||
        msm_lambda_on_start(l, on_start, &ex) != MSM_OK ||
        msm_lambda_on_stop(l, on_stop, &ex) != MSM_OK)
        return 1;
    msm_lambda_set_opaque(l, &ex);
    int rc = msm_lambda_main(l, argc, argv);
    free(ex.fail_name); /* here: stop hooks do not run when a start hook failed */
    return rc;
}
