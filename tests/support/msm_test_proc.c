/* SPDX-License-Identifier: MIT */
/* Test support: child processes with a log file, an HTTP readiness wait, a reaping stop. */
#include "msm_test_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_POLL_MS    50
#define READY_ATTEMPT_MS 5000 /* one request; a stuck connection is given up and retried */
#define STOP_POLL_MS     10

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

/* ---- the command line ---- */

int msm_test_proc_arg(msm_test_proc_t *p, const char *fmt, ...)
{
    size_t room = sizeof(p->args) - p->args_len;
    if (p->argc >= MSM_TEST_PROC_MAX_ARGS) {
        p->args_overflow = 1;
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->args + p->args_len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        p->args[p->args_len] = '\0';
        p->args_overflow = 1;
        return -1;
    }
    p->arg_at[p->argc++] = p->args_len;
    p->args_len += (size_t)n + 1;
    return 0;
}

/* ---- start ---- */

/* In the child: a fresh signal state, the log as stdout and stderr, then exec. */
static void child_exec(const msm_test_proc_t *p, char *const argv[], pid_t parent)
{
    /* Never outlive the test when asked, even if it died before prctl() took effect. */
    if (p->death_signal && (prctl(PR_SET_PDEATHSIG, p->death_signal) != 0 || getppid() != parent))
        _exit(127);
    if (p->own_group)
        setpgid(0, 0);
    /* A test may block signals (a daemon's signalfd) or ignore SIGPIPE; exec keeps both. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (p->log[0]) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            if (fd > STDERR_FILENO)
                close(fd);
        }
    }
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int msm_test_proc_start(msm_test_proc_t *p)
{
    if (p->argc == 0 || p->args_overflow)
        return -1;
    char *argv[MSM_TEST_PROC_MAX_ARGS + 1];
    for (int i = 0; i < p->argc; i++)
        argv[i] = p->args + p->arg_at[i];
    argv[p->argc] = NULL;
    pid_t parent = getpid();
    fflush(NULL); /* nothing buffered here is written twice */
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        child_exec(p, argv, parent);
    /* Also here, so that a signal to the group right after the start reaches it. */
    if (p->own_group)
        setpgid(pid, pid);
    p->pid = pid;
    return 0;
}

/* ---- readiness over HTTP ---- */

/* Waits for @p events on @p fd until @p deadline. @returns 0 when ready. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int connect_loopback(int fd, int port, uint64_t deadline)
{
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
        return 0;
    if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) != 0)
        return -1;
    int err = 0;
    socklen_t len = sizeof(err);
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        } else if (wait_fd(fd, POLLOUT, deadline) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Reads the answer to its end (the server closes: HTTP/1.0), keeping its first bytes.
 * @returns the status code, or 0 when there is none. */
static int read_status(int fd, uint64_t deadline)
{
    char head[64];
    size_t have = 0;
    for (;;) {
        char buf[1024];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0)
            break;
        if (n < 0) {
            if ((errno != EAGAIN && errno != EINTR) || wait_fd(fd, POLLIN, deadline) != 0)
                break;
            continue;
        }
        size_t take = sizeof(head) - 1 - have < (size_t)n ? sizeof(head) - 1 - have : (size_t)n;
        memcpy(head + have, buf, take);
        have += take;
    }
    head[have] = '\0';
    int minor, status;
    if (sscanf(head, "HTTP/1.%d %3d", &minor, &status) != 2)
        return 0;
    return status;
}

/* One GET on a connection of its own. @returns the HTTP status, 0 without an answer. */
static int http_status(int port, const char *path, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    char req[512];
    int len =
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path, port);
    int status = 0;
    if (len > 0 && (size_t)len < sizeof(req) && connect_loopback(fd, port, deadline) == 0 &&
        send_all(fd, req, (size_t)len, deadline) == 0)
        status = read_status(fd, deadline);
    close(fd);
    return status;
}

/* 1 when the process has exited (it is reaped then). */
static int proc_exited(msm_test_proc_t *p)
{
    pid_t r = waitpid(p->pid, NULL, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->pid = 0;
        return 1;
    }
    return 0;
}

int msm_test_proc_wait_ready(msm_test_proc_t *p, const char *path, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (p->pid <= 0 || proc_exited(p))
            return -1;
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        uint64_t left = deadline - now;
        int attempt_ms = left < READY_ATTEMPT_MS ? (int)left : READY_ATTEMPT_MS;
        if (http_status(p->port, path ? path : "/readyz", attempt_ms) == 200)
            return 0;
        nap_ms(READY_POLL_MS);
    }
}

/* ---- stop ---- */

static void proc_signal(const msm_test_proc_t *p, int sig)
{
    kill(p->own_group ? -p->pid : p->pid, sig);
}

int msm_test_proc_stop(msm_test_proc_t *p, int sig, int grace_ms)
{
    if (p->pid <= 0)
        return -1;
    if (sig)
        proc_signal(p, sig);
    uint64_t deadline = now_ms() + (uint64_t)(grace_ms > 0 ? grace_ms : 0);
    int status = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (r < 0 && errno != EINTR) { /* reaped elsewhere: nothing left to stop */
            p->pid = 0;
            return -1;
        }
        if (now_ms() >= deadline) {
            proc_signal(p, SIGKILL);
            while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
            }
            p->pid = 0;
            return -1;
        }
        nap_ms(STOP_POLL_MS);
    }
    p->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the Kafka mock cluster as a process ---- */

int msm_test_kafka_mock_start(msm_test_proc_t *p,
                              const char *bin,
                              int brokers,
                              const char *log,
                              char *bootstrap,
                              size_t bootstrap_size)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->log, sizeof(p->log), "%s", log);
    p->death_signal = SIGTERM;
    msm_test_proc_arg(p, "%s", bin);
    msm_test_proc_arg(p, "--brokers=%d", brokers);
    if (msm_test_proc_start(p) != 0)
        return -1;
    bootstrap[0] = '\0';
    for (int i = 0; i < 100 && !bootstrap[0]; i++) {
        FILE *f = fopen(p->log, "r");
        char line[512] = "";
        if (f && fgets(line, sizeof(line), f) && strchr(line, '\n') && strchr(line, ':')) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(bootstrap, bootstrap_size, "%s", line);
        }
        if (f)
            fclose(f);
        if (!bootstrap[0])
            nap_ms(50);
    }
    if (bootstrap[0])
        return 0;
    msm_test_proc_stop(p, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    return -1;
}
