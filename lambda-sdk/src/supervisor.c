/* SPDX-License-Identifier: MIT */
/* The Atlas-style supervisor msm_lambda_main() runs: it binds the lambda's port once and
 * starts worker processes that all accept on that socket (a worker busy in a handler takes
 * no new connection; SO_REUSEPORT lets a restarted supervisor bind while old workers
 * drain). Workers are this binary run again (or the canary's binary) with LM_WORKER_ENV
 * naming the inherited socket and the board (board.h), where they post what they do.
 *
 * From the board the supervisor, on one loop with a 100 ms tick:
 *  - restarts a worker that died (at once, then with backoff while it keeps dying), and
 *    kills one whose handler overran its deadline by --watchdog-ms or whose loop hangs;
 *  - sizes the pool between --min-workers and --max-workers to keep handler utilisation
 *    near --target-utilization (scale.c);
 *  - runs --canary on a share of the workers, compares its errors and p99 with the current
 *    release's, and promotes it (rolling every worker over to it) or rolls it back;
 *  - on SIGTERM stops taking connections, lets every worker drain, and exits 0 when all
 *    did (a second signal is passed on: the workers stop at once).
 * Its own HTTP port (--admin-port) serves /healthz, /readyz, /metrics, /debug/info and
 * /debug/workers. Workers die with it (PR_SET_PDEATHSIG): kill -9 of the supervisor is
 * kill -9 of the lambda. */
#include "lambda_int.h"

#include "board.h"
#include "scale.h"

#include "msm/err.h"
#include "msm/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAC     "lambda"
#define TICK_MS 100
/* A worker that lived this long before dying is restarted at once. */
#define STABLE_MS              10000
#define RESTART_BACKOFF_MIN_MS 100
#define RESTART_BACKOFF_MAX_MS 5000
/* A stopping worker gets its drain timeout plus this before SIGKILL. */
#define STOP_GRACE_MS      5000
#define CANARY_MAX_CRASHES 3

extern char **environ;

typedef enum { W_FREE = 0, W_STARTING, W_READY, W_STOPPING } wstate_t;
typedef enum { REL_CURRENT = 0, REL_CANARY = 1 } release_t;
static const char *const release_names[] = {"current", "canary"};
static const char *const wstate_names[] = {"free", "starting", "ready", "stopping"};

typedef enum { CANARY_NONE = 0, CANARY_RUNNING, CANARY_PROMOTED, CANARY_ROLLED_BACK } canary_t;
static const char *const canary_names[] = {"none", "running", "promoted", "rolled_back"};

/* Worker i uses board slot i. */
typedef struct {
    pid_t w_pid;
    wstate_t w_state;
    release_t w_release;
    int w_obsolete; /* runs a release no longer wanted: stopped once replaced */
    int64_t w_started_ms;
    int64_t w_stop_sent_ms;
    const char *w_killed_for; /* the watchdog's reason, or NULL */
} worker_t;

typedef struct {
    msm_lambda_t *sv_l;
    const lm_conf_t *sv_conf;
    char **sv_argv;
    msm_loop_t *sv_loop;
    int sv_listen_fd;
    uint16_t sv_port;
    lm_board_t *sv_board;
    int sv_board_fd;
    uint32_t sv_nslots;
    worker_t *sv_workers;
    int sv_sigfd;
    sigset_t sv_oldmask;
    msm_timer_t sv_tick;
    msm_metrics_t *sv_metrics;
    msm_http_server_t *sv_admin;
    char sv_current_path[PATH_MAX]; /* the binary of the current release */
    canary_t sv_canary;
    int64_t sv_canary_started_ms;
    int sv_canary_crashes;
    lm_tally_t sv_canary_base0; /* the current release's counters when the canary began */
    char sv_canary_why[256];
    lm_tally_t sv_retired[2]; /* counters of the workers gone, by release */
    lm_tally_t sv_last[2];    /* what the metrics have counted so far */
    lm_scaler_t sv_scaler;
    int sv_draining, sv_signals, sv_forced, sv_failed, sv_ever_ready;
    int64_t sv_drain_deadline_ms;
    int sv_crash_streak;
    int64_t sv_next_spawn_ms;
    int sv_spawned_generation;
    /* metrics */
    msm_metric_t *m_workers, *m_restarts, *m_scale, *m_decisions, *m_answered, *m_failed;
    msm_metric_child_t *m_desired, *m_util, *m_canary_state;
} sv_t;

static int64_t now_ms(void)
{
    return msm__board_now_ms();
}

/* ---- starting and stopping workers ---- */

static int live(const worker_t *w)
{
    return w->w_state == W_STARTING || w->w_state == W_READY;
}

static const char *release_path(const sv_t *sv, release_t r)
{
    return r == REL_CANARY ? sv->sv_conf->lc_canary : sv->sv_current_path;
}

/* The environment of a worker: ours plus LM_WORKER_ENV (built before fork: the child only
 * calls async-signal-safe functions). */
static char **worker_environ(const char *entry)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0, prefix = strlen(LM_WORKER_ENV);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], LM_WORKER_ENV, prefix) == 0 && environ[i][prefix] == '=')
            continue;
        env[k++] = environ[i];
    }
    env[k++] = (char *)entry;
    return env;
}

static int spawn(sv_t *sv, release_t release)
{
    uint32_t slot = 0;
    while (slot < sv->sv_nslots && sv->sv_workers[slot].w_state != W_FREE)
        slot++;
    if (slot == sv->sv_nslots)
        return -1; /* every slot still held by a draining worker: the next tick retries */
    uint32_t threads = sv->sv_conf->lc_threads > 0 ? (uint32_t)sv->sv_conf->lc_threads : 1;
    msm__slot_reset(&sv->sv_board->b_slots[slot], threads);
    atomic_store_explicit(&sv->sv_board->b_slots[slot].s_state, LM_SLOT_STARTING,
                          memory_order_release);
    char entry[96];
    snprintf(entry, sizeof(entry), "%s=%d,%d,%u", LM_WORKER_ENV, sv->sv_listen_fd, sv->sv_board_fd,
             slot);
    char **env = worker_environ(entry);
    const char *path = release_path(sv, release);
    if (!env)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* The child: die with the supervisor, take default signals, keep the two fds. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        fcntl(sv->sv_listen_fd, F_SETFD, 0);
        fcntl(sv->sv_board_fd, F_SETFD, 0);
        execve(path, sv->sv_argv, env);
        _exit(127);
    }
    free(env);
    if (pid < 0) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot start a worker: fork: %s", strerror(errno));
        return -1;
    }
    worker_t *w = &sv->sv_workers[slot];
    *w = (worker_t){
        .w_pid = pid, .w_state = W_STARTING, .w_release = release, .w_started_ms = now_ms()};
    msm_log(MSM_LOG_INFO, FAC, "worker %u (pid %d, %s release%s%s) starting", slot, (int)pid,
            release_names[release], release == REL_CANARY ? " " : "",
            release == REL_CANARY ? path : "");
    return 0;
}

/* Retires a worker the pool no longer needs: it finishes what it has and leaves while the
 * others serve (SIGTERM is for the lambda's own shutdown: it refuses what comes late). */
static void stop_worker(sv_t *sv, worker_t *w)
{
    if (!live(w))
        return;
    kill(w->w_pid, LM_RETIRE_SIGNAL);
    w->w_state = W_STOPPING;
    w->w_stop_sent_ms = now_ms();
    msm_log(MSM_LOG_INFO, FAC, "worker %ld (pid %d) retired", (long)(w - sv->sv_workers),
            (int)w->w_pid);
}

static void kill_worker(sv_t *sv, worker_t *w, const char *why)
{
    msm_log(MSM_LOG_WARN, FAC, "worker %ld (pid %d) killed: %s", (long)(w - sv->sv_workers),
            (int)w->w_pid, why);
    w->w_killed_for = why;
    kill(w->w_pid, SIGKILL);
}

/* ---- counting ---- */

/* Everything answered so far by @p release (retired workers included). */
static void tally_release(const sv_t *sv, release_t release, int64_t now, lm_tally_t *t)
{
    *t = sv->sv_retired[release];
    for (uint32_t i = 0; i < sv->sv_nslots; i++) {
        const worker_t *w = &sv->sv_workers[i];
        if (w->w_state != W_FREE && w->w_release == release)
            msm__board_sum(&sv->sv_board->b_slots[i], now, t);
    }
}

static int count(const sv_t *sv, release_t release, int ready_only)
{
    int n = 0;
    for (uint32_t i = 0; i < sv->sv_nslots; i++) {
        const worker_t *w = &sv->sv_workers[i];
        if (w->w_release == release && !w->w_obsolete &&
            (ready_only ? w->w_state == W_READY : live(w)))
            n++;
    }
    return n;
}

/* ---- a worker ended ---- */

static void worker_gone(sv_t *sv, worker_t *w, int status)
{
    uint32_t slot = (uint32_t)(w - sv->sv_workers);
    int64_t now = now_ms();
    lm_tally_t t = {0};
    msm__board_sum(&sv->sv_board->b_slots[slot], now, &t);
    msm__tally_add(&sv->sv_retired[w->w_release], &t);
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof(how), "exit status %d", WEXITSTATUS(status));
    /* Ready by its own account counts, even if no tick saw it yet. */
    int started =
        w->w_state == W_READY || atomic_load_explicit(&sv->sv_board->b_slots[slot].s_state,
                                                      memory_order_acquire) >= LM_SLOT_READY;
    int expected = w->w_state == W_STOPPING || sv->sv_draining;
    if (expected) {
        msm_log(MSM_LOG_INFO, FAC, "worker %u (pid %d) stopped: %s", slot, (int)w->w_pid, how);
        /* A worker still starting has no SIGTERM handler yet: the stop it was sent (or the
         * process group's SIGTERM) ends it the default way, and it had nothing to drain. */
        int stopped_starting = !started && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM;
        if (sv->sv_draining && !clean && !stopped_starting)
            sv->sv_failed = 1;
    } else {
        sv->sv_ever_ready |= started;
        const char *reason = w->w_killed_for ? "watchdog" : (started ? "crashed" : "failed_start");
        msm_counter_inc(msm_metric_labels(sv->m_restarts, reason, NULL));
        if (w->w_release == REL_CANARY && !w->w_obsolete)
            sv->sv_canary_crashes++;
        if (!started && !sv->sv_ever_ready && w->w_release == REL_CURRENT) {
            /* The first workers cannot start (a start hook failed, the binary is broken):
             * restarting them would only hide it. */
            msm_log(MSM_LOG_ERROR, FAC, "worker %u (pid %d) could not start (%s): giving up", slot,
                    (int)w->w_pid, how);
            sv->sv_failed = 1;
        } else if (w->w_release == REL_CURRENT) {
            sv->sv_crash_streak = now - w->w_started_ms >= STABLE_MS ? 1 : sv->sv_crash_streak + 1;
            int64_t delay = 0;
            if (sv->sv_crash_streak > 1) {
                delay = RESTART_BACKOFF_MIN_MS
                        << (sv->sv_crash_streak > 8 ? 6 : sv->sv_crash_streak - 2);
                if (delay > RESTART_BACKOFF_MAX_MS)
                    delay = RESTART_BACKOFF_MAX_MS;
            }
            sv->sv_next_spawn_ms = now + delay;
            msm_log(MSM_LOG_WARN, FAC, "worker %u (pid %d) %s (%s): restarting in %lld ms", slot,
                    (int)w->w_pid, w->w_killed_for ? "killed by the watchdog" : "died", how,
                    (long long)delay);
        } else {
            msm_log(MSM_LOG_WARN, FAC, "canary worker %u (pid %d) died (%s)", slot, (int)w->w_pid,
                    how);
        }
    }
    *w = (worker_t){0};
    msm__slot_reset(&sv->sv_board->b_slots[slot], 0);
}

static void reap(sv_t *sv)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        for (uint32_t i = 0; i < sv->sv_nslots; i++) {
            if (sv->sv_workers[i].w_state != W_FREE && sv->sv_workers[i].w_pid == pid) {
                worker_gone(sv, &sv->sv_workers[i], status);
                break;
            }
        }
    }
}

/* ---- keeping the pool as wanted ---- */

static int canary_wanted(const sv_t *sv, int total)
{
    if (sv->sv_canary != CANARY_RUNNING)
        return 0;
    int n = (total * sv->sv_conf->lc_canary_share + 50) / 100;
    return n < 1 ? 1 : n;
}

/* Stops the live worker of @p release with the highest slot (the newest, usually). */
static void stop_one(sv_t *sv, release_t release)
{
    for (uint32_t i = sv->sv_nslots; i-- > 0;) {
        worker_t *w = &sv->sv_workers[i];
        if (live(w) && w->w_release == release && !w->w_obsolete) {
            stop_worker(sv, w);
            return;
        }
    }
}

static void reconcile(sv_t *sv)
{
    if (sv->sv_draining || sv->sv_failed)
        return;
    int total = sv->sv_scaler.sc_desired;
    int want_canary = canary_wanted(sv, total);
    int want_current = total - want_canary;
    if (want_current < 1) /* a canary always runs beside the current release */
        want_current = 1;
    int64_t now = now_ms();
    int have[2] = {count(sv, REL_CURRENT, 0), count(sv, REL_CANARY, 0)};
    int want[2] = {want_current, want_canary};
    for (int r = 0; r < 2; r++) {
        while (have[r] < want[r] && now >= sv->sv_next_spawn_ms && spawn(sv, (release_t)r) == 0)
            have[r]++;
        while (have[r] > want[r]) {
            stop_one(sv, (release_t)r);
            have[r]--;
        }
    }
    /* A replaced release's workers leave once the new ones serve as many. */
    int ready = count(sv, REL_CURRENT, 1) + count(sv, REL_CANARY, 1);
    for (uint32_t i = 0; i < sv->sv_nslots && ready >= total; i++) {
        worker_t *w = &sv->sv_workers[i];
        if (w->w_obsolete && live(w))
            stop_worker(sv, w);
    }
}

/* ---- the tick: readiness, watchdog, scaling, canary, metrics ---- */

static void watch(sv_t *sv, worker_t *w, const lm_slot_t *s, int64_t now)
{
    if (w->w_state != W_READY || w->w_killed_for)
        return;
    int64_t limit = sv->sv_conf->lc_watchdog_ms;
    lm_slot_t *m = (lm_slot_t *)s;
    int loop_in_handler = 0;
    for (uint32_t t = 0; t < s->s_nthreads; t++) {
        int64_t since =
            atomic_load_explicit(&m->s_threads[t].t_busy_since_ms, memory_order_acquire);
        int64_t deadline =
            atomic_load_explicit(&m->s_threads[t].t_deadline_ms, memory_order_relaxed);
        if (since <= 0)
            continue;
        if (sv->sv_conf->lc_threads == 0)
            loop_in_handler = 1;
        int64_t over = deadline > 0 ? now - deadline : now - since;
        if (over > limit) {
            kill_worker(sv, w,
                        deadline > 0 ? "a handler overran its deadline"
                                     : "a handler ran too long (no deadline)");
            return;
        }
    }
    int64_t beat = atomic_load_explicit(&m->s_heartbeat_ms, memory_order_relaxed);
    if (!loop_in_handler && beat > 0 && now - beat > limit)
        kill_worker(sv, w, "its event loop stopped answering");
}

static void judge_canary(sv_t *sv, int64_t now)
{
    if (sv->sv_canary != CANARY_RUNNING)
        return;
    const lm_conf_t *c = sv->sv_conf;
    lm_canary_rules_t rules = {
        .cj_window_ms = c->lc_canary_window_ms,
        .cj_min_events = (uint64_t)c->lc_canary_min_events,
        .cj_error_margin = 0.05,
        .cj_latency_factor = 2.0,
        .cj_latency_slack_us = 50000,
        .cj_max_crashes = CANARY_MAX_CRASHES,
    };
    lm_tally_t now_base, base, canary;
    tally_release(sv, REL_CURRENT, now, &now_base);
    msm__tally_sub(&now_base, &sv->sv_canary_base0, &base);
    tally_release(sv, REL_CANARY, now, &canary);
    lm_canary_verdict_t v = msm__canary_judge(&rules, &base, &canary, sv->sv_canary_crashes,
                                              now - sv->sv_canary_started_ms, sv->sv_canary_why,
                                              sizeof(sv->sv_canary_why));
    if (v == LM_CANARY_WAIT)
        return;
    if (v == LM_CANARY_PROMOTE) {
        msm_log(MSM_LOG_INFO, FAC, "canary %s promoted: %s; every worker moves to it", c->lc_canary,
                sv->sv_canary_why);
        msm_counter_inc(msm_metric_labels(sv->m_decisions, "promote", NULL));
        sv->sv_canary = CANARY_PROMOTED;
        snprintf(sv->sv_current_path, sizeof(sv->sv_current_path), "%s", c->lc_canary);
        for (uint32_t i = 0; i < sv->sv_nslots; i++) {
            worker_t *w = &sv->sv_workers[i];
            if (w->w_state == W_FREE)
                continue;
            if (w->w_release == REL_CURRENT)
                w->w_obsolete = 1;
            else
                w->w_release = REL_CURRENT; /* its counters now count as the current's */
        }
        sv->sv_retired[REL_CURRENT] = sv->sv_retired[REL_CANARY];
        memset(&sv->sv_retired[REL_CANARY], 0, sizeof(lm_tally_t));
    } else {
        msm_log(MSM_LOG_WARN, FAC, "canary %s rolled back: %s", c->lc_canary, sv->sv_canary_why);
        msm_counter_inc(msm_metric_labels(sv->m_decisions, "rollback", NULL));
        sv->sv_canary = CANARY_ROLLED_BACK;
        for (uint32_t i = 0; i < sv->sv_nslots; i++) {
            worker_t *w = &sv->sv_workers[i];
            if (w->w_release == REL_CANARY && live(w)) {
                w->w_obsolete = 1;
                stop_worker(sv, w);
            }
        }
    }
    /* The per-release counters restart from the new split. */
    tally_release(sv, REL_CURRENT, now, &sv->sv_last[REL_CURRENT]);
    tally_release(sv, REL_CANARY, now, &sv->sv_last[REL_CANARY]);
    msm_gauge_set(sv->m_canary_state, sv->sv_canary);
}

static void update_metrics(sv_t *sv, int64_t now)
{
    for (int r = 0; r < 2; r++) {
        lm_tally_t t, d;
        tally_release(sv, (release_t)r, now, &t);
        msm__tally_sub(&t, &sv->sv_last[r], &d);
        msm_counter_add(msm_metric_labels(sv->m_answered, release_names[r], NULL), d.answered);
        msm_counter_add(msm_metric_labels(sv->m_failed, release_names[r], NULL), d.failed);
        sv->sv_last[r] = t;
        msm_gauge_set(msm_metric_labels(sv->m_workers, release_names[r], NULL),
                      count(sv, (release_t)r, 1));
    }
    msm_gauge_set(sv->m_desired, sv->sv_scaler.sc_desired);
    msm_gauge_set(sv->m_util, sv->sv_scaler.sc_utilisation);
}

static void scale(sv_t *sv, int64_t now)
{
    lm_tally_t a, b;
    tally_release(sv, REL_CURRENT, now, &a);
    tally_release(sv, REL_CANARY, now, &b);
    int running = count(sv, REL_CURRENT, 1) + count(sv, REL_CANARY, 1);
    int before = sv->sv_scaler.sc_desired;
    int after = msm__scaler_step(&sv->sv_scaler, now, a.busy_us + b.busy_us, running);
    if (after == before)
        return;
    msm_counter_inc(msm_metric_labels(sv->m_scale, after > before ? "up" : "down", NULL));
    msm_log(MSM_LOG_INFO, FAC,
            "scaling %s: %d -> %d workers (utilisation %.0f%% of %d worker(s), target %d%%)",
            after > before ? "up" : "down", before, after, sv->sv_scaler.sc_utilisation * 100,
            running, sv->sv_conf->lc_target_utilization);
}

static void finish_drain(sv_t *sv, int64_t now)
{
    int left = 0;
    for (uint32_t i = 0; i < sv->sv_nslots; i++)
        left += sv->sv_workers[i].w_state != W_FREE;
    if (left == 0) {
        msm_loop_stop(sv->sv_loop);
        return;
    }
    if (now >= sv->sv_drain_deadline_ms) {
        msm_log(MSM_LOG_WARN, FAC, "drain timeout: killing %d worker(s)", left);
        for (uint32_t i = 0; i < sv->sv_nslots; i++)
            if (sv->sv_workers[i].w_state != W_FREE)
                kill(sv->sv_workers[i].w_pid, SIGKILL);
        sv->sv_forced = 1;
        sv->sv_drain_deadline_ms = INT64_MAX;
    }
}

static void on_tick(msm_loop_t *loop, void *opaque)
{
    sv_t *sv = opaque;
    int64_t now = now_ms();
    reap(sv);
    for (uint32_t i = 0; i < sv->sv_nslots; i++) {
        worker_t *w = &sv->sv_workers[i];
        lm_slot_t *s = &sv->sv_board->b_slots[i];
        if (w->w_state == W_STARTING &&
            atomic_load_explicit(&s->s_state, memory_order_acquire) == LM_SLOT_READY) {
            w->w_state = W_READY;
            if (!sv->sv_ever_ready)
                msm_log(MSM_LOG_INFO, FAC, "%s ready on port %u (supervisor on port %u)",
                        sv->sv_l->lm_name, (unsigned)sv->sv_port,
                        (unsigned)msm_http_server_port(sv->sv_admin));
            sv->sv_ever_ready = 1;
            if (w->w_release == REL_CANARY && sv->sv_canary_started_ms == 0) {
                /* Both releases are compared over the same time, from here on. */
                sv->sv_canary_started_ms = now;
                tally_release(sv, REL_CURRENT, now, &sv->sv_canary_base0);
            }
        }
        if (w->w_state == W_STOPPING &&
            now - w->w_stop_sent_ms > sv->sv_conf->lc_drain_timeout_ms + STOP_GRACE_MS)
            kill_worker(sv, w, "it did not stop in time");
        watch(sv, w, s, now);
    }
    if (sv->sv_failed && !sv->sv_draining) {
        msm_loop_stop(loop);
        return;
    }
    if (sv->sv_draining) {
        finish_drain(sv, now);
    } else {
        scale(sv, now);
        if (sv->sv_canary_started_ms > 0)
            judge_canary(sv, now);
        reconcile(sv);
    }
    update_metrics(sv, now);
    msm_loop_timer_start(loop, &sv->sv_tick, TICK_MS, on_tick, sv);
}

/* ---- signals ---- */

static void begin_drain(sv_t *sv)
{
    sv->sv_draining = 1;
    /* The socket closes once every worker has quiesced: new connections are refused. */
    if (sv->sv_listen_fd >= 0) {
        close(sv->sv_listen_fd);
        sv->sv_listen_fd = -1;
    }
    msm_http_server_quiesce(sv->sv_admin);
    sv->sv_drain_deadline_ms = now_ms() + sv->sv_conf->lc_drain_timeout_ms + STOP_GRACE_MS;
    msm_log(MSM_LOG_INFO, FAC, "draining: stopping every worker");
    for (uint32_t i = 0; i < sv->sv_nslots; i++) {
        worker_t *w = &sv->sv_workers[i];
        if (w->w_state != W_FREE)
            kill(w->w_pid, SIGTERM);
    }
}

static void on_signal(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop;
    (void)events;
    sv_t *sv = opaque;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            reap(sv);
            reconcile(sv);
            continue;
        }
        sv->sv_signals++;
        if (sv->sv_signals == 1) {
            begin_drain(sv);
        } else if (sv->sv_signals == 2) {
            msm_log(MSM_LOG_WARN, FAC, "second signal: the workers stop now");
            sv->sv_forced = 1;
            for (uint32_t i = 0; i < sv->sv_nslots; i++)
                if (sv->sv_workers[i].w_state != W_FREE)
                    kill(sv->sv_workers[i].w_pid, SIGTERM);
        }
    }
    if (sv->sv_draining)
        finish_drain(sv, now_ms());
}

static int take_signals(sv_t *sv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, &sv->sv_oldmask) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    sv->sv_sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sv->sv_sigfd < 0)
        return -1;
    return msm_loop_watch(sv->sv_loop, sv->sv_sigfd, MSM_LOOP_READ, on_signal, sv) == MSM_OK ? 0
                                                                                             : -1;
}

/* ---- the supervisor's HTTP port ---- */

static int admin_ready(void *opaque, char *why, size_t n)
{
    sv_t *sv = opaque;
    if (sv->sv_draining) {
        snprintf(why, n, "draining");
        return 0;
    }
    if (count(sv, REL_CURRENT, 1) + count(sv, REL_CANARY, 1) == 0) {
        snprintf(why, n, "no worker is serving");
        return 0;
    }
    return 1;
}

static void h_workers(msm_http_req_t *req, void *opaque)
{
    sv_t *sv = opaque;
    int64_t now = now_ms();
    json_t *list = json_array();
    for (uint32_t i = 0; i < sv->sv_nslots; i++) {
        const worker_t *w = &sv->sv_workers[i];
        if (w->w_state == W_FREE)
            continue;
        lm_slot_t *s = &sv->sv_board->b_slots[i];
        int busy = 0;
        for (uint32_t t = 0; t < s->s_nthreads; t++)
            busy +=
                atomic_load_explicit(&s->s_threads[t].t_busy_since_ms, memory_order_relaxed) > 0;
        json_array_append_new(
            list,
            json_pack("{s:i,s:i,s:s,s:s,s:b,s:i,s:I,s:I,s:I}", "slot", (int)i, "pid", (int)w->w_pid,
                      "release", release_names[w->w_release], "state", wstate_names[w->w_state],
                      "obsolete", w->w_obsolete, "busy_threads", busy, "answered",
                      (json_int_t)atomic_load_explicit(&s->s_answered, memory_order_relaxed),
                      "failed",
                      (json_int_t)atomic_load_explicit(&s->s_failed, memory_order_relaxed),
                      "age_ms", (json_int_t)(now - w->w_started_ms)));
    }
    json_t *canary = json_pack("{s:s,s:s?,s:s}", "state", canary_names[sv->sv_canary], "binary",
                               sv->sv_conf->lc_canary, "why", sv->sv_canary_why);
    msm_http_respond_json(req, 200,
                          json_pack("{s:i,s:i,s:i,s:f,s:i,s:s,s:o,s:o}", "port", (int)sv->sv_port,
                                    "desired", sv->sv_scaler.sc_desired, "ready",
                                    count(sv, REL_CURRENT, 1) + count(sv, REL_CANARY, 1),
                                    "utilization", sv->sv_scaler.sc_utilisation, "threads",
                                    sv->sv_conf->lc_threads, "current", sv->sv_current_path,
                                    "canary", canary, "workers", list));
}

static int register_metrics(sv_t *sv)
{
    static const char *const rel[] = {"release", NULL};
    static const char *const reason[] = {"reason", NULL};
    static const char *const dir[] = {"direction", NULL};
    static const char *const decision[] = {"decision", NULL};
    msm_metrics_t *m = sv->sv_metrics;
    msm_metric_t *desired, *util, *cstate;
    if (msm_metrics_gauge(m, "msm_lambda_workers", "Worker processes serving, by release.", rel,
                          &sv->m_workers) != MSM_OK ||
        msm_metrics_gauge(m, "msm_lambda_workers_desired",
                          "Workers the autoscaler wants (between --min-workers and "
                          "--max-workers).",
                          NULL, &desired) != MSM_OK ||
        msm_metrics_gauge(m, "msm_lambda_utilization",
                          "Busy handler time over handler capacity (workers x threads), last "
                          "second.",
                          NULL, &util) != MSM_OK ||
        msm_metrics_counter(m, "msm_lambda_worker_restarts_total",
                            "Workers restarted, by reason (crashed, watchdog, failed_start).",
                            reason, &sv->m_restarts) != MSM_OK ||
        msm_metrics_counter(m, "msm_lambda_scale_events_total",
                            "Changes of the desired worker count, by direction.", dir,
                            &sv->m_scale) != MSM_OK ||
        msm_metrics_counter(m, "msm_lambda_canary_decisions_total",
                            "Canary verdicts, by decision (promote, rollback).", decision,
                            &sv->m_decisions) != MSM_OK ||
        msm_metrics_gauge(m, "msm_lambda_canary_state",
                          "0 no canary, 1 running, 2 promoted, 3 rolled back.", NULL,
                          &cstate) != MSM_OK ||
        msm_metrics_counter(m, "msm_lambda_answered_total",
                            "Invocations answered by all workers, by release.", rel,
                            &sv->m_answered) != MSM_OK ||
        msm_metrics_counter(m, "msm_lambda_failed_total",
                            "Invocations answered retry, fatal or past their deadline, by "
                            "release.",
                            rel, &sv->m_failed) != MSM_OK)
        return -1;
    sv->m_desired = msm_metric_solo(desired);
    sv->m_util = msm_metric_solo(util);
    sv->m_canary_state = msm_metric_solo(cstate);
    return 0;
}

static int start_admin(sv_t *sv, const json_t *conf_json)
{
    char name[160];
    snprintf(name, sizeof(name), "%s supervisor", sv->sv_l->lm_name);
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = sv->sv_conf->lc_bind;
    hc.port = sv->sv_conf->lc_admin_port;
    hc.name = name;
    hc.config = conf_json;
    hc.metrics = sv->sv_metrics;
    hc.ready = admin_ready;
    hc.ready_opaque = sv;
    char err[256];
    sv->sv_admin = msm_http_server_new(sv->sv_loop, &hc, err, sizeof(err));
    if (!sv->sv_admin) {
        msm_log(MSM_LOG_ERROR, FAC, "supervisor: cannot serve HTTP: %s", err);
        return -1;
    }
    if (msm_http_server_route(sv->sv_admin, "GET", "/debug/workers", h_workers, sv) != MSM_OK)
        return -1;
    return 0;
}

/* ---- the whole run ---- */

static int check_canary(const lm_conf_t *c)
{
    if (!c->lc_canary || !*c->lc_canary)
        return 0;
    if (access(c->lc_canary, X_OK) != 0) {
        msm_log(MSM_LOG_ERROR, FAC, "--canary %s: %s", c->lc_canary, strerror(errno));
        return -1;
    }
    return 1;
}

int msm__supervise(msm_lambda_t *l, int argc, char **argv, const json_t *conf_json)
{
    (void)argc;
    const lm_conf_t *c = &l->lm_conf;
    sv_t *sv = calloc(1, sizeof(*sv));
    if (!sv)
        return 1;
    int rc = 1;
    sv->sv_l = l;
    sv->sv_conf = c;
    sv->sv_argv = argv;
    sv->sv_listen_fd = sv->sv_board_fd = sv->sv_sigfd = -1;
    msm_timer_init(&sv->sv_tick);
    int canary = check_canary(c);
    if (canary < 0)
        goto out;
    if (c->lc_max_workers == 0) {
        l->lm_conf.lc_max_workers = c->lc_min_workers;
    } else if (c->lc_max_workers < c->lc_min_workers) {
        fprintf(stderr, "%s: --max-workers %d is below --min-workers %d\n", l->lm_name,
                c->lc_max_workers, c->lc_min_workers);
        rc = 2;
        goto out;
    }
    /* Our own binary, even if its file is replaced while we run. */
    snprintf(sv->sv_current_path, sizeof(sv->sv_current_path), "/proc/self/exe");
    /* Room for the pool, a canary beside it and the workers a rollover replaces. */
    sv->sv_nslots = (uint32_t)c->lc_max_workers * 2 + 2;
    sv->sv_workers = calloc(sv->sv_nslots, sizeof(*sv->sv_workers));
    sv->sv_board = msm__board_create(sv->sv_nslots, &sv->sv_board_fd);
    sv->sv_loop = msm_loop_new();
    sv->sv_metrics = msm_metrics_new();
    if (!sv->sv_workers || !sv->sv_board || !sv->sv_loop || !sv->sv_metrics ||
        register_metrics(sv) != 0) {
        msm_log(MSM_LOG_ERROR, FAC, "supervisor: cannot set up (out of memory?)");
        goto out;
    }
    char err[256];
    sv->sv_listen_fd = msm_http_listen(c->lc_bind, c->lc_port, 1, &sv->sv_port, err, sizeof(err));
    if (sv->sv_listen_fd < 0) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot serve HTTP: %s", err);
        goto out;
    }
    if (start_admin(sv, conf_json) != 0 || take_signals(sv) != 0)
        goto out;
    msm__scaler_init(&sv->sv_scaler, c->lc_min_workers, c->lc_max_workers,
                     c->lc_threads > 0 ? c->lc_threads : 1, c->lc_target_utilization / 100.0, 1000,
                     c->lc_scale_down_delay_ms, now_ms());
    if (canary)
        sv->sv_canary = CANARY_RUNNING;
    msm_gauge_set(sv->m_canary_state, sv->sv_canary);
    msm_log(MSM_LOG_INFO, FAC,
            "supervisor (pid %d): port %u, %d-%d workers x %d thread(s)%s%s, admin port %u",
            (int)getpid(), (unsigned)sv->sv_port, c->lc_min_workers, c->lc_max_workers,
            c->lc_threads, canary ? ", canary " : "", canary ? c->lc_canary : "",
            (unsigned)msm_http_server_port(sv->sv_admin));
    reconcile(sv);
    msm_loop_timer_start(sv->sv_loop, &sv->sv_tick, TICK_MS, on_tick, sv);
    msm_loop_run(sv->sv_loop);
    rc = sv->sv_failed || sv->sv_forced ? 1 : 0;
out:
    if (sv->sv_loop) {
        msm_loop_timer_stop(sv->sv_loop, &sv->sv_tick);
        if (sv->sv_sigfd >= 0)
            msm_loop_unwatch(sv->sv_loop, sv->sv_sigfd);
    }
    /* Workers still running (a failed start): they go with us. */
    for (uint32_t i = 0; sv->sv_workers && i < sv->sv_nslots; i++) {
        if (sv->sv_workers[i].w_state != W_FREE) {
            kill(sv->sv_workers[i].w_pid, SIGKILL);
            waitpid(sv->sv_workers[i].w_pid, NULL, 0);
        }
    }
    msm_http_server_free(sv->sv_admin);
    if (sv->sv_sigfd >= 0) {
        close(sv->sv_sigfd);
        sigprocmask(SIG_SETMASK, &sv->sv_oldmask, NULL);
    }
    if (sv->sv_listen_fd >= 0)
        close(sv->sv_listen_fd);
    if (sv->sv_board_fd >= 0)
        close(sv->sv_board_fd);
    msm__board_unmap(sv->sv_board);
    msm_loop_free(sv->sv_loop);
    msm_metrics_free(sv->sv_metrics);
    free(sv->sv_workers);
    msm_log(MSM_LOG_INFO, FAC, "%s stopped", l->lm_name);
    free(sv);
    return rc;
}
