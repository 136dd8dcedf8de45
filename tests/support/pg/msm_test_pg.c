/* SPDX-License-Identifier: MIT */
/* Test support: a private PostgreSQL cluster and blocking SQL helpers (msm_test_pg.h). */
#include "msm_test_pg.h"

#include "msm_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_AS_WHEN_ROOT "nobody"
#define START_TIMEOUT_MS 60000
#define STOP_GRACE_MS    20000
#define MAX_ARGS         64

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int is_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, X_OK) == 0;
}

/* The server binaries: pg_config --bindir, else the newest /usr/lib/postgresql/N/bin. */
static int find_bindir(char *out, size_t n)
{
    FILE *f = popen("pg_config --bindir 2>/dev/null", "r");
    if (f) {
        char line[512] = "";
        if (fgets(line, sizeof(line), f))
            line[strcspn(line, "\n")] = '\0';
        pclose(f);
        if (*line && is_file(line, "initdb") && is_file(line, "postgres")) {
            snprintf(out, n, "%s", line);
            return 0;
        }
    }
    int best = -1;
    DIR *d = opendir("/usr/lib/postgresql");
    for (struct dirent *e; d && (e = readdir(d));) {
        char bin[512];
        int v = atoi(e->d_name);
        snprintf(bin, sizeof(bin), "/usr/lib/postgresql/%s/bin", e->d_name);
        if (v > best && is_file(bin, "initdb") && is_file(bin, "postgres")) {
            best = v;
            snprintf(out, n, "%s", bin);
        }
    }
    if (d)
        closedir(d);
    return best >= 0 ? 0 : -1;
}

/* Who runs the server: ourselves, or RUN_AS_WHEN_ROOT when we are root. */
static int server_user(uid_t *uid, gid_t *gid)
{
    if (geteuid() != 0) {
        *uid = geteuid();
        *gid = getegid();
        return 0;
    }
    struct passwd *pw = getpwnam(RUN_AS_WHEN_ROOT);
    if (!pw) {
        fprintf(stderr,
                "msm_test_pg: running as root and there is no user %s to run "
                "PostgreSQL as\n",
                RUN_AS_WHEN_ROOT);
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

/* Runs argv as the server user with stdout and stderr appended to @p log. With @p wait,
 * waits and returns the exit status; otherwise returns the pid. -1 on failure. */
static pid_t run_as_server_user(char *const *argv, const char *log, int wait)
{
    uid_t uid;
    gid_t gid;
    if (server_user(&uid, &gid) != 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
            perror("msm_test_pg: dropping root");
            _exit(126);
        }
        /* After the uid change (which clears it): the server dies with the test. */
        prctl(PR_SET_PDEATHSIG, SIGQUIT);
        if (getppid() != parent)
            _exit(125);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        perror("msm_test_pg: exec");
        _exit(127);
    }
    if (!wait)
        return pid;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void print_log(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- %s\n", log);
    while (fgets(line, sizeof(line), f))
        fputs(line, stderr);
    fprintf(stderr, "----\n");
    fclose(f);
}

static int make_dir(msm_test_pg_t *pg)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(pg->dir, sizeof(pg->dir), "%s/msm-pg-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(pg->dir))
        return -1;
    uid_t uid;
    gid_t gid;
    if (server_user(&uid, &gid) != 0 || chown(pg->dir, uid, gid) != 0 || chmod(pg->dir, 0700))
        return -1;
    snprintf(pg->log, sizeof(pg->log), "%s/server.log", pg->dir);
    int fd = open(pg->log, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || fchown(fd, uid, gid) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int start_server(msm_test_pg_t *pg, const char *const *settings)
{
    char exe[600], data[300], port[16], sock[300];
    char *argv[MAX_ARGS];
    int argc = 0;
    char opts[MAX_ARGS][300];
    snprintf(exe, sizeof(exe), "%s/postgres", pg->bindir);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    snprintf(port, sizeof(port), "port=%d", pg->port);
    snprintf(sock, sizeof(sock), "unix_socket_directories=%s", pg->dir);
    const char *fixed[] = {"listen_addresses=127.0.0.1", "fsync=off", "logging_collector=off",
                           "max_wal_senders=10", "max_replication_slots=10"};
    argv[argc++] = exe;
    argv[argc++] = "-D";
    argv[argc++] = data;
    argv[argc++] = "-c";
    argv[argc++] = port;
    argv[argc++] = "-c";
    argv[argc++] = sock;
    int nopt = 0;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        argv[argc++] = "-c";
        argv[argc++] = (char *)fixed[i];
    }
    for (size_t i = 0; settings && settings[i] && argc < MAX_ARGS - 3; i++) {
        snprintf(opts[nopt], sizeof(opts[nopt]), "%s", settings[i]);
        argv[argc++] = "-c";
        argv[argc++] = opts[nopt++];
    }
    argv[argc] = NULL;
    pg->pid = run_as_server_user(argv, pg->log, 0);
    if (pg->pid <= 0)
        return -1;
    snprintf(pg->conninfo, sizeof(pg->conninfo),
             "host=127.0.0.1 port=%d dbname=postgres user=msm connect_timeout=10", pg->port);
    uint64_t deadline = now_ms() + START_TIMEOUT_MS;
    while (now_ms() < deadline) {
        if (PQping(pg->conninfo) == PQPING_OK)
            return 0;
        if (waitpid(pg->pid, NULL, WNOHANG) == pg->pid) {
            pg->pid = 0;
            return -1; /* exited: e.g. the port was taken meanwhile */
        }
        nap_ms(50);
    }
    return -1;
}

int msm_test_pg_start(msm_test_pg_t *pg, const char *const *settings)
{
    memset(pg, 0, sizeof(*pg));
    if (find_bindir(pg->bindir, sizeof(pg->bindir)) != 0) {
        fprintf(stderr, "msm_test_pg: no PostgreSQL server binaries (initdb, postgres) via "
                        "pg_config --bindir or /usr/lib/postgresql/*/bin: run "
                        "scripts/install-deps.sh\n");
        return -1;
    }
    if (make_dir(pg) != 0) {
        fprintf(stderr, "msm_test_pg: cannot make a directory for the server: %s\n",
                strerror(errno));
        return -1;
    }
    char initdb[600], data[300];
    snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bindir);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    char *argv[] = {initdb, "-D",   data,          "-U", "msm", "--auth=trust",
                    "-E",   "UTF8", "--no-locale", "-N", NULL};
    if (run_as_server_user(argv, pg->log, 1) != 0) {
        fprintf(stderr, "msm_test_pg: initdb failed\n");
        print_log(pg->log);
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        pg->port = msm_test_free_port();
        if (pg->port > 0 && start_server(pg, settings) == 0)
            return 0;
        msm_test_pg_stop(pg);
    }
    fprintf(stderr, "msm_test_pg: the server did not start\n");
    print_log(pg->log);
    return -1;
}

int msm_test_pg_stop(msm_test_pg_t *pg)
{
    if (pg->pid <= 0)
        return 0;
    kill(pg->pid, SIGINT); /* fast shutdown */
    uint64_t deadline = now_ms() + STOP_GRACE_MS;
    int status = 0;
    while (waitpid(pg->pid, &status, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(pg->pid, SIGKILL);
            waitpid(pg->pid, &status, 0);
            break;
        }
        nap_ms(20);
    }
    pg->pid = 0;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void msm_test_pg_destroy(msm_test_pg_t *pg)
{
    msm_test_pg_stop(pg);
    if (pg->dir[0])
        nftw(pg->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    pg->dir[0] = '\0';
}

int msm_test_pg_has_wal2json(const msm_test_pg_t *pg)
{
    PGconn *c = msm_test_pg_connect(pg);
    char *pkglib = c ? msm_test_pg_value(c, "SELECT setting FROM pg_config() WHERE name = "
                                            "'PKGLIBDIR'")
                     : NULL;
    int found = 0;
    if (pkglib) {
        char path[600];
        snprintf(path, sizeof(path), "%s/wal2json.so", pkglib);
        found = access(path, R_OK) == 0;
    }
    if (!found)
        fprintf(stderr,
                "msm_test_pg: wal2json.so is not in the server's library directory "
                "(%s): install postgresql-N-wal2json (scripts/install-deps.sh)\n",
                pkglib ? pkglib : "?");
    free(pkglib);
    PQfinish(c);
    return found;
}

PGconn *msm_test_pg_connect(const msm_test_pg_t *pg)
{
    PGconn *c = PQconnectdb(pg->conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "msm_test_pg: connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static char *vformat(const char *fmt, va_list ap)
{
    char *sql = NULL;
    return vasprintf(&sql, fmt, ap) < 0 ? NULL : sql;
}

int msm_test_pg_exec(PGconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    if (!sql || !c)
        return -1;
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "msm_test_pg: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    free(sql);
    return rc;
}

char *msm_test_pg_value(PGconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    if (!sql || !c)
        return NULL;
    PGresult *r = PQexec(c, sql);
    char *v = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "msm_test_pg: %s: %s", sql, PQresultErrorMessage(r));
    else if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    free(sql);
    return v;
}
