/* SPDX-License-Identifier: MIT */
/* msmctl: the operator's CLI over the frontend's HTTP API (API.md "msmctl"). This file finds
 * the command in argv, loads its options with the shared config loader (so --config FILE,
 * --help and --version work like everywhere else) and runs it. */
#include "msmctl.h"

#include "msm/buf.h"
#include "msm/config.h"
#include "msm/err.h"
#include "msm/version.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_URL "http://127.0.0.1:8080"

/* Every option once; a command takes the globals plus the ones it names. */
static const msm_conf_def_t all_opts[] = {
    MSM_CONF_STR("url",
                 ctl_opts_t,
                 url,
                 DEFAULT_URL,
                 "frontend base URL (environment MSM_FRONTEND_URL too)"),
    MSM_CONF_BOOL("json", ctl_opts_t, json, false, "print the raw JSON answer"),
    MSM_CONF_INT("http-timeout-ms",
                 ctl_opts_t,
                 http_timeout_ms,
                 30000,
                 1,
                 3600000,
                 "give up on a request after this long"),
    MSM_CONF_SECRET_STR("token",
                        ctl_opts_t,
                        token,
                        NULL,
                        "bearer token for a frontend run with auth.tokens (environment "
                        "MSM_TOKEN too)"),
    MSM_CONF_STR("schema-subject",
                 ctl_opts_t,
                 schema_subject,
                 NULL,
                 "validate the topic's events against this schema subject"),
    MSM_CONF_STR("topic", ctl_opts_t, topic, NULL,
                 "topic subscribed to, or published to by a schedule (required)"),
    MSM_CONF_STR("endpoint",
                 ctl_opts_t,
                 endpoint,
                 NULL,
                 "lambda URL(s) pushed to, comma-separated (required)"),
    MSM_CONF_INT("max-concurrency",
                 ctl_opts_t,
                 max_concurrency,
                 CTL_UNSET,
                 CTL_UNSET,
                 1000000,
                 "deliveries in flight at most (-1: server default, 64)"),
    MSM_CONF_INT("timeout-ms",
                 ctl_opts_t,
                 timeout_ms,
                 CTL_UNSET,
                 CTL_UNSET,
                 3600000,
                 "push timeout (-1: server default, 30000)"),
    MSM_CONF_INT("max-attempts",
                 ctl_opts_t,
                 max_attempts,
                 CTL_UNSET,
                 CTL_UNSET,
                 1000000,
                 "attempts before the dead-letter queue (-1: server default, 5)"),
    MSM_CONF_BOOL("ordered",
                  ctl_opts_t,
                  ordered,
                  false,
                  "deliver events of one ordering key one at a time, in order"),
    MSM_CONF_STR("filter",
                 ctl_opts_t,
                 filter,
                 NULL,
                 "only deliver matching events, e.g. 'attributes.kind = \"image\"'"),
    MSM_CONF_INT("rate-limit-per-s",
                 ctl_opts_t,
                 rate_limit_per_s,
                 CTL_UNSET,
                 CTL_UNSET,
                 100000000,
                 "deliveries per second at most (-1: server default, 0 = none)"),
    MSM_CONF_INT("priority",
                 ctl_opts_t,
                 priority,
                 CTL_UNSET,
                 CTL_UNSET,
                 9,
                 "0 lowest .. 9 highest (-1: server default, 5)"),
    MSM_CONF_INT("min-backoff-ms",
                 ctl_opts_t,
                 min_backoff_ms,
                 CTL_UNSET,
                 CTL_UNSET,
                 86400000,
                 "first retry delay (-1: server default, 100)"),
    MSM_CONF_INT("max-backoff-ms",
                 ctl_opts_t,
                 max_backoff_ms,
                 CTL_UNSET,
                 CTL_UNSET,
                 86400000,
                 "longest retry delay (-1: server default, 60000)"),
    MSM_CONF_BOOL("watch", ctl_opts_t, watch, false, "refresh until Ctrl-C"),
    MSM_CONF_INT(
        "interval-ms", ctl_opts_t, interval_ms, 1000, 100, 3600000, "--watch refresh period"),
    MSM_CONF_INT("watch-count",
                 ctl_opts_t,
                 watch_count,
                 0,
                 0,
                 1000000,
                 "--watch: stop after this many refreshes (0: until Ctrl-C)"),
    MSM_CONF_STR(
        "data", ctl_opts_t, data, NULL, "the event's payload as JSON, or @FILE (required)"),
    MSM_CONF_STR("key", ctl_opts_t, key, NULL, "event key"),
    MSM_CONF_STR("ordering-key", ctl_opts_t, ordering_key, NULL, "ordering key"),
    MSM_CONF_INT("delay-ms",
                 ctl_opts_t,
                 delay_ms,
                 0,
                 0,
                 2000000000,
                 "deliver this many ms after publishing"),
    MSM_CONF_PROPS("attr", ctl_opts_t, attr, "attribute name=value (repeatable)"),
    MSM_CONF_STR("idempotency-key",
                 ctl_opts_t,
                 idempotency_key,
                 NULL,
                 "dedupe key (with --count, \"-<n>\" is appended per event)"),
    MSM_CONF_INT("count", ctl_opts_t, count, 1, 1, 100000000, "publish this many copies"),
    MSM_CONF_DOUBLE("rate",
                    ctl_opts_t,
                    rate,
                    0.0,
                    0.0,
                    1e9,
                    "events per second at most (0: as fast as the frontend takes them)"),
    MSM_CONF_INT("batch-size", ctl_opts_t, batch_size, 100, 1, 100, "events per request"),
    MSM_CONF_BOOL("progress",
                  ctl_opts_t,
                  progress,
                  false,
                  "draw the progress bar even when stderr is not a terminal"),
    MSM_CONF_STR("state", ctl_opts_t, state, NULL, "list the tasks in this state (dead, retrying, delayed)"),
    MSM_CONF_INT("limit", ctl_opts_t, limit, 100, 1, 100000, "list at most this many"),
    MSM_CONF_STR("schema", ctl_opts_t, schema, NULL, "the schema text, or @FILE (required)"),
    MSM_CONF_STR("type", ctl_opts_t, schema_type, "AVRO", "AVRO, JSON or PROTOBUF"),
    MSM_CONF_STR("message-name", ctl_opts_t, message_name, NULL,
                 "PROTOBUF: the message's full name (default: the first message of the last "
                 "file)"),
    MSM_CONF_STR("cron", ctl_opts_t, cron, NULL,
                 "5-field cron expression in UTC, e.g. '*/5 * * * *' (or --every-ms)"),
    MSM_CONF_INT("every-ms", ctl_opts_t, every_ms, CTL_UNSET, CTL_UNSET, 31622400000LL,
                 "publish every this many ms, at least 1000 (or --cron)"),
    MSM_CONF_STR("timezone", ctl_opts_t, timezone, NULL, "the cron's time zone (only UTC)"),
    MSM_CONF_STR("catch-up", ctl_opts_t, catch_up, NULL,
                 "missed ticks after downtime: none, last (server default) or all"),
    MSM_CONF_STR("partition", ctl_opts_t, partition, NULL, "the source's partition (required)"),
    MSM_CONF_INT("sequence", ctl_opts_t, sequence, 0, 0, INT64_MAX,
                 "the sequence the source has reached there (required, >= 1)"),
};
#define N_ALL    MSM_CONF_COUNT(all_opts)
#define N_GLOBAL 4 /* url, json, http-timeout-ms, token come first */

typedef int ctl_run_t(ctl_t *c, const char **args, int nargs);

typedef struct {
    const char *cm_words; /* "topic create" */
    const char *cm_args;  /* positional arguments for usage, e.g. "NAME" */
    int cm_min, cm_max;   /* how many positional arguments (-1: any) */
    const char *cm_summary;
    const char *cm_opts; /* option names, space-separated */
    ctl_run_t *cm_run;
} ctl_cmd_t;

static const ctl_cmd_t commands[] = {
    {"topic create", "NAME", 1, 1, "create or update a topic", "schema-subject", ctl_topic_create},
    {"topic list", "", 0, 0, "list topics", "", ctl_topic_list},
    {"topic get", "NAME", 1, 1, "show a topic", "", ctl_topic_get},
    {"topic delete", "NAME", 1, 1, "delete a topic", "", ctl_topic_delete},
    {"sub create", "NAME", 1, 1, "create or update a subscription",
     "topic endpoint max-concurrency timeout-ms max-attempts ordered filter rate-limit-per-s "
     "priority min-backoff-ms max-backoff-ms",
     ctl_sub_create},
    {"sub list", "", 0, 0, "list subscriptions", "", ctl_sub_list},
    {"sub get", "NAME", 1, 1, "show a subscription", "", ctl_sub_get},
    {"sub delete", "NAME", 1, 1, "delete a subscription", "", ctl_sub_delete},
    {"sub pause", "NAME", 1, 1, "stop pushing a subscription's events (they accumulate)", "",
     ctl_sub_pause},
    {"sub resume", "NAME", 1, 1, "push a paused subscription's events again", "",
     ctl_sub_resume},
    {"canary promote", "SUB", 1, 1,
     "make a subscription's canary version everyone's: every endpoint takes traffic", "",
     ctl_canary_promote},
    {"canary rollback", "SUB", 1, 1, "stop sending a subscription's canary version traffic",
     "", ctl_canary_rollback},
    {"sub stats", "NAME", 1, 1, "show a subscription's counters", "watch interval-ms watch-count",
     ctl_sub_stats},
    {"publish", "TOPIC", 1, 1, "publish events",
     "data key ordering-key delay-ms attr idempotency-key priority count rate batch-size "
     "progress",
     ctl_publish},
    {"tasks", "SUB [EVENT_ID]", 1, 2,
     "show one event's task in a subscription, or list tasks with --state dead|retrying|delayed", "state limit",
     ctl_tasks},
    {"dlq list", "SUB", 1, 1, "list a subscription's dead-letter queue", "limit", ctl_dlq_list},
    {"dlq replay", "SUB [EVENT_ID...]", 1, -1, "send dead-lettered events again (all by default)",
     "", ctl_dlq_replay},
    {"schema register", "SUBJECT", 1, 1, "register a schema version",
     "schema type message-name", ctl_schema_register},
    {"schema list", "", 0, 0, "list schema subjects", "", ctl_schema_list},
    {"schedule put", "NAME", 1, 1, "create or update a recurring schedule",
     "topic cron every-ms timezone catch-up data key ordering-key attr priority",
     ctl_schedule_put},
    {"schedule list", "", 0, 0, "list recurring schedules", "", ctl_schedule_list},
    {"schedule get", "NAME", 1, 1, "show a recurring schedule", "", ctl_schedule_get},
    {"schedule delete", "NAME", 1, 1, "delete a recurring schedule", "", ctl_schedule_delete},
    {"cdc list", "", 0, 0, "list CDC sources", "", ctl_cdc_list},
    {"cdc get", "NAME", 1, 1, "show a CDC source with its partitions' cursors, lag and puller",
     "", ctl_cdc_get},
    {"cdc notify", "NAME", 1, 1, "tell the scheduler pulling a partition to fetch now",
     "partition sequence", ctl_cdc_notify},
    {"up", "", 0, 0, "start redis-server and the four daemons here, in the foreground", "",
     ctl_up},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

void ctl_error(const ctl_t *c, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line, whatever the message holds. */
    for (char *p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    if (c && c->cmd_name)
        fprintf(stderr, "msmctl %s: %s\n", c->cmd_name, msg);
    else
        fprintf(stderr, "msmctl: %s\n", msg);
}

char *ctl_text_arg(ctl_t *c, const char *flag, const char *value)
{
    if (value[0] != '@') {
        char *copy = strdup(value);
        if (!copy)
            ctl_error(c, "out of memory");
        return copy;
    }
    msm_buf_t b = {0};
    int rc = msm_buf_append_file(&b, value + 1);
    if (rc != MSM_OK) {
        ctl_error(c, "%s %s: %s", flag, value,
                  rc == MSM_ERR_NOMEM ? "out of memory" : strerror(errno));
        msm_buf_deinit(&b);
        return NULL;
    }
    return (char *)b.data;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: msmctl [--url URL] [--json] COMMAND [ARGS] [options]\n"
            "The msm operator's CLI over the frontend's HTTP API (default %s, or\n"
            "environment MSM_FRONTEND_URL). `msmctl COMMAND --help` lists its options.\n\n"
            "Commands:\n",
            DEFAULT_URL);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", commands[i].cm_words, commands[i].cm_args);
        fprintf(out, "  %-32s %s\n", left, commands[i].cm_summary);
    }
    fprintf(out, "\nExit status: 0 done, 1 the request failed, 2 bad command line.\n");
}

/* ---- finding the command before the options are known ---- */

static const msm_conf_def_t *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_ALL; i++) {
        if (strlen(all_opts[i].cd_name) == len && strncmp(all_opts[i].cd_name, name, len) == 0)
            return &all_opts[i];
    }
    return NULL;
}

/* The words that are not options or option values, in order (like the loader sees them). */
static int words_of(int argc, char **argv, const char **words, int max)
{
    int n = 0, endopts = 0;
    for (int i = 1; i < argc && n < max; i++) {
        const char *a = argv[i];
        if (!endopts && strcmp(a, "--") == 0) {
            endopts = 1;
            continue;
        }
        if (endopts || a[0] != '-' || a[1] == '\0') {
            words[n++] = a;
            continue;
        }
        if (a[1] != '-' || strchr(a, '='))
            continue;
        const msm_conf_def_t *d = find_opt(a + 2, strlen(a + 2));
        int takes_value = strcmp(a, "--config") == 0 || (d && d->cd_type != MSM_CONF_T_BOOL);
        if (takes_value && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            i++;
    }
    return n;
}

static const ctl_cmd_t *find_command(const char **words, int nwords, int *nused)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const char *w = commands[i].cm_words;
        const char *space = strchr(w, ' ');
        if (!space) {
            if (nwords >= 1 && strcmp(words[0], w) == 0) {
                *nused = 1;
                return &commands[i];
            }
            continue;
        }
        size_t l1 = (size_t)(space - w);
        if (nwords >= 2 && strlen(words[0]) == l1 && strncmp(words[0], w, l1) == 0 &&
            strcmp(words[1], space + 1) == 0) {
            *nused = 2;
            return &commands[i];
        }
    }
    return NULL;
}

static int is_group(const char *word)
{
    size_t n = strlen(word);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strncmp(commands[i].cm_words, word, n) == 0 && commands[i].cm_words[n] == ' ')
            return 1;
    }
    return 0;
}

/* The globals plus the command's own options. */
static size_t command_table(const ctl_cmd_t *cmd, msm_conf_def_t *defs)
{
    size_t n = 0;
    for (; n < N_GLOBAL; n++)
        defs[n] = all_opts[n];
    const char *p = cmd->cm_opts;
    while (*p) {
        size_t len = strcspn(p, " ");
        const msm_conf_def_t *d = find_opt(p, len);
        if (d)
            defs[n++] = *d;
        p += len;
        while (*p == ' ')
            p++;
    }
    return n;
}

/* The process environment for the loader, with MSM_FRONTEND_URL (the documented name)
 * standing in for MSM_URL, the variable the "url" setting reads. @returns a malloc'd
 * NULL-terminated array (the strings are borrowed, except *owned). */
static char **cli_env(char **owned)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof(*envp));
    const char *u = getenv("MSM_FRONTEND_URL");
    *owned = NULL;
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(u && *u && strncmp(environ[i], "MSM_URL=", 8) == 0))
            envp[k++] = environ[i];
    }
    if (u && *u && (*owned = malloc(strlen(u) + 9)) != NULL) {
        sprintf(*owned, "MSM_URL=%s", u);
        envp[k++] = *owned;
    }
    envp[k] = NULL;
    return envp;
}

static int run_command(const ctl_cmd_t *cmd, int nused, int argc, char **argv)
{
    ctl_t c;
    memset(&c, 0, sizeof(c));
    c.cmd_name = cmd->cm_words;
    msm_conf_def_t defs[N_ALL];
    size_t ndefs = command_table(cmd, defs);
    const char **pos = calloc((size_t)argc + 1, sizeof(*pos));
    char *env_url = NULL;
    char **envp = cli_env(&env_url);
    int npos = 0, rc = CTL_EXIT_USAGE;
    if (!pos || !envp) {
        ctl_error(&c, "out of memory");
        rc = CTL_EXIT_ERROR;
        goto done;
    }
    msm_conf_src_t src = {
        .argc = argc, .argv = argv, .envp = envp, .positional = pos, .npositional = &npos};
    char err[512];
    int lr = msm_conf_load(defs, ndefs, &c.o, &src, err, sizeof(err));
    if (lr == MSM_CONF_HELP) {
        char prog[128];
        snprintf(prog, sizeof(prog), "msmctl %s%s%s", cmd->cm_words, *cmd->cm_args ? " " : "",
                 cmd->cm_args);
        msm_conf_help(defs, ndefs, stdout, prog, cmd->cm_summary);
        rc = CTL_EXIT_OK;
        goto done;
    }
    if (lr == MSM_CONF_VERSION) {
        printf("msmctl %s (git %s)\n", msm_version(), msm_git_sha());
        rc = CTL_EXIT_OK;
        goto done;
    }
    if (lr != MSM_OK) {
        ctl_error(&c, "%s", err);
        goto done;
    }
    const char **args = pos + nused;
    int nargs = npos - nused;
    if (nargs < cmd->cm_min || (cmd->cm_max >= 0 && nargs > cmd->cm_max)) {
        ctl_error(&c, "expected %s%s (see msmctl %s --help)", *cmd->cm_args ? "" : "no arguments",
                  cmd->cm_args, cmd->cm_words);
    } else if (!cmd->cm_run) {
        ctl_error(&c, "not yet: start the suite with `make run` for now");
        rc = CTL_EXIT_ERROR;
    } else if (ctl_http_init(&c) == 0) {
        rc = cmd->cm_run(&c, args, nargs);
        ctl_http_deinit(&c);
    } else {
        rc = CTL_EXIT_ERROR;
    }
    msm_conf_free(defs, ndefs, &c.o);
done:
    free(pos);
    free(envp);
    free(env_url);
    return rc;
}

int main(int argc, char **argv)
{
    const char *words[3];
    int nwords = words_of(argc, argv, words, 3), nused = 0;
    const ctl_cmd_t *cmd = nwords ? find_command(words, nwords, &nused) : NULL;
    if (cmd)
        return run_command(cmd, nused, argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return CTL_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("msmctl %s (git %s)\n", msm_version(), msm_git_sha());
            return CTL_EXIT_OK;
        }
    }
    if (nwords == 0)
        ctl_error(NULL, "no command given (see msmctl --help)");
    else if (is_group(words[0]) && nwords == 1)
        ctl_error(NULL, "%s: expected a subcommand, e.g. \"%s list\" (see msmctl --help)", words[0],
                  words[0]);
    else if (is_group(words[0]))
        ctl_error(NULL, "unknown command \"%s %s\" (see msmctl --help)", words[0], words[1]);
    else
        ctl_error(NULL, "unknown command \"%s\" (see msmctl --help)", words[0]);
    return CTL_EXIT_USAGE;
}
