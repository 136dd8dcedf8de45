/* SPDX-License-Identifier: MIT */
/* msmctl up: a local suite in the foreground — a private redis-server (data in ./var/redis,
 * AOF with fsync always) and the four daemons on their default ports, logs in ./var/log.
 * Ctrl-C (or SIGTERM) stops them all, gracefully, in reverse order. The daemons are found
 * beside msmctl in a build tree (<build>/<layer>/msm-<layer>), else on PATH. */
#include "msmctl.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define UP_REDIS_PORT 6390

static const char *const layers[] = {"frontend", "scheduler", "flowcontrol", "router"};
#define NLAYERS (sizeof(layers) / sizeof(layers[0]))

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* <dir of msmctl>/../../<layer>/msm-<layer> when it exists, else "msm-<layer>" (PATH). */
static void find_binary(const char *layer, char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len > 0) {
        self[len] = '\0';
        char *dir = dirname(self); /* <build>/tools/msmctl */
        snprintf(out, n, "%s/../../%s/msm-%s", dir, layer, layer);
        if (access(out, X_OK) == 0)
            return;
    }
    snprintf(out, n, "msm-%s", layer);
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    setpgid(0, 0); /* the terminal's Ctrl-C reaches msmctl only; it stops them in order */
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int wait_ready(ctl_t *c, int port)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", port);
    for (int i = 0; i < 150 && !stop_requested; i++) {
        curl_easy_reset(c->curl);
        curl_easy_setopt(c->curl, CURLOPT_URL, url);
        curl_easy_setopt(c->curl, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, 500L);
        long status = 0;
        if (curl_easy_perform(c->curl) == CURLE_OK)
            curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200)
            return 0;
        usleep(100000);
    }
    return -1;
}

static void stop_all(pid_t *pids, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (pids[i] <= 0)
            continue;
        kill(pids[i], SIGTERM);
        int status;
        waitpid(pids[i], &status, 0);
    }
}

int ctl_up(ctl_t *c, const char **args, int nargs)
{
    (void)args;
    (void)nargs;
    if (mkdir("var", 0755) != 0 && errno != EEXIST) {
        ctl_error(c, "cannot create ./var: %s", strerror(errno));
        return CTL_EXIT_ERROR;
    }
    mkdir("var/redis", 0755);
    mkdir("var/log", 0755);
    char redis_dir[PATH_MAX], cwd[PATH_MAX / 2], port[16], url[64];
    if (!getcwd(cwd, sizeof(cwd))) {
        ctl_error(c, "getcwd: %s", strerror(errno));
        return CTL_EXIT_ERROR;
    }
    snprintf(redis_dir, sizeof(redis_dir), "%s/var/redis", cwd);
    snprintf(port, sizeof(port), "%d", UP_REDIS_PORT);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", UP_REDIS_PORT);
    setenv("MSM_REDIS_URL", url, 1);

    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pid_t pids[1 + NLAYERS] = {0};
    int n = 0;
    char *const redis_argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
                                redis_dir, "--appendonly", "yes", "--appendfsync", "always",
                                "--save", "", NULL};
    pids[n++] = spawn(redis_argv, "var/log/redis.log");
    static const int ports[] = {8080, 8081, 8082, 8083};
    int rc = CTL_EXIT_OK;
    for (size_t i = 0; i < NLAYERS && !stop_requested; i++) {
        char bin[PATH_MAX], log[64];
        find_binary(layers[i], bin, sizeof(bin));
        snprintf(log, sizeof(log), "var/log/%s.log", layers[i]);
        char *const argv[] = {bin, NULL};
        pids[n++] = spawn(argv, log);
        if (wait_ready(c, ports[i]) != 0) {
            ctl_error(c, "%s did not become ready on :%d (see %s)", layers[i], ports[i], log);
            rc = CTL_EXIT_ERROR;
            break;
        }
        printf("up: %-12s :%d  pid %d  log %s\n", layers[i], ports[i], (int)pids[n - 1], log);
    }
    if (rc == CTL_EXIT_OK && !stop_requested) {
        printf("up: redis %s (data var/redis); Ctrl-C stops everything\n", url);
        fflush(stdout);
        while (!stop_requested) {
            int status;
            pid_t dead = waitpid(-1, &status, 0);
            if (dead > 0 && !stop_requested) {
                for (int i = 0; i < n; i++)
                    if (pids[i] == dead)
                        pids[i] = 0;
                ctl_error(c, "process %d exited unexpectedly; stopping the suite", (int)dead);
                rc = CTL_EXIT_ERROR;
                break;
            }
        }
    }
    printf("up: stopping\n");
    stop_all(pids, n);
    return rc;
}
