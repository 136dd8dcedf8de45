/* SPDX-License-Identifier: MIT */
/* A registry client we did not write: the npm package @kafkajs/confluent-schema-registry
 * (pinned in package.json here) against the real msm-frontend process and a real redis-server.
 * The client is installed into a temporary folder at test time; registry_client.js runs its
 * steps and prints one line each; this driver asserts its exit status.
 *
 *   test_confluent_client FRONTEND CLIENT_DIR */
#include "msm_test.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SUBJECT          "msm-confluent-value"
#define NPM_TIMEOUT_MS   (300 * 1000) /* the npm registry is on the internet */
#define NODE_TIMEOUT_MS  (120 * 1000)
#define READY_TIMEOUT_MS 15000
#define LOG_TAIL_LINES   30

static const char *frontend_bin;
static const char *client_dir;

static msm_test_redis_t redis_srv;
static char work_dir[256];
static char frontend_log[320];
static char frontend_url[64];
static pid_t frontend_pid;
static int tools_found;
static int client_installed;

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 1 when an executable @p name is on PATH. */
static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char dir[1024];
    while (*path) {
        size_t n = strcspn(path, ":");
        char file[1200];
        snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
        snprintf(file, sizeof(file), "%s/%s", n ? dir : ".", name);
        if (access(file, X_OK) == 0)
            return 1;
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

static void print_file(const char *title, const char *path, int tail_lines)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("  (%s: %s cannot be read)\n", title, path);
        return;
    }
    char ring[LOG_TAIL_LINES][400];
    int n = 0;
    if (tail_lines > LOG_TAIL_LINES)
        tail_lines = LOG_TAIL_LINES;
    while (fgets(ring[n % tail_lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    printf("  --- %s%s ---\n", title, n > tail_lines ? " (last lines)" : "");
    for (int i = n > tail_lines ? n - tail_lines : 0; i < n; i++)
        printf("  %s%s", ring[i % tail_lines], strchr(ring[i % tail_lines], '\n') ? "" : "\n");
    fflush(stdout);
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = in ? fopen(to, "wb") : NULL;
    int rc = in && out ? 0 : -1;
    char buf[8192];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    }
    if (in && ferror(in))
        rc = -1;
    if (out && fclose(out) != 0)
        rc = -1;
    if (in)
        fclose(in);
    return rc;
}

/* ---- child processes ---- */

/* Starts argv[0] (searched on PATH) in a process group of its own, output to @p log. */
static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Never outlive the test, and take npm's own children along when killed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s\n", argv[0]);
    _exit(127);
}

/* Runs a command to its end. @returns its exit status, 128+signal, or -1 when it had to be
 * killed after @p timeout_ms. */
static int run(char *const argv[], const char *log, uint64_t timeout_ms)
{
    pid_t pid = spawn(argv, log);
    if (pid < 0)
        return -1;
    uint64_t deadline = now_ms() + timeout_ms;
    int status;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (now_ms() > deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            printf("  %s did not finish within %llu s: killed\n", argv[0],
                   (unsigned long long)timeout_ms / 1000);
            return -1;
        }
        usleep(50000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int frontend_ready(void)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/readyz", frontend_url);
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    int rc = -1;
    for (uint64_t deadline = now_ms() + READY_TIMEOUT_MS; now_ms() < deadline;) {
        long status = 0;
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) {
            rc = 0;
            break;
        }
        if (waitpid(frontend_pid, NULL, WNOHANG) == frontend_pid) {
            frontend_pid = 0;
            break;
        }
        usleep(100000);
    }
    curl_easy_cleanup(e);
    return rc;
}

static int frontend_start(void)
{
    int port = msm_test_free_port();
    char ns[64], redis_arg[160], ns_arg[80], port_arg[32];
    snprintf(frontend_url, sizeof(frontend_url), "http://127.0.0.1:%d", port);
    snprintf(frontend_log, sizeof(frontend_log), "%s/frontend.log", work_dir);
    snprintf(redis_arg, sizeof(redis_arg), "--redis.url=%s", redis_srv.url);
    snprintf(ns_arg, sizeof(ns_arg), "--namespace=%s", msm_test_namespace(ns, sizeof(ns)));
    snprintf(port_arg, sizeof(port_arg), "--http.port=%d", port);
    char *argv[] = {(char *)frontend_bin,    redis_arg, ns_arg, port_arg,
                    "--http.bind=127.0.0.1", NULL};
    if (port <= 0 || (frontend_pid = spawn(argv, frontend_log)) < 0)
        return -1;
    return frontend_ready();
}

/* SIGTERM, as an operator would: @returns the exit status (0 expected), -1 if killed. */
static int frontend_stop(void)
{
    if (frontend_pid <= 0)
        return 0;
    kill(frontend_pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 200; i++) {
        if (waitpid(frontend_pid, &status, WNOHANG) == frontend_pid) {
            frontend_pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(50000);
    }
    kill(frontend_pid, SIGKILL);
    waitpid(frontend_pid, NULL, 0);
    frontend_pid = 0;
    return -1;
}

/* ---- the suite ---- */

static int start_all(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof(work_dir), "%s/msm-confluent-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(work_dir)) {
        fprintf(stderr, "cannot create a temporary directory\n");
        work_dir[0] = '\0';
        return -1;
    }
    if (msm_test_redis_start(&redis_srv) != 0) {
        fprintf(stderr, "cannot start redis-server\n");
        return -1;
    }
    if (frontend_start() != 0) {
        fprintf(stderr, "%s did not become ready\n", frontend_bin);
        print_file("frontend log", frontend_log, LOG_TAIL_LINES);
        return -1;
    }
    return 0;
}

/* Whatever suite_init got to; CUnit does not call the cleanup of a suite whose init failed. */
static int release_all(void)
{
    int rc = frontend_stop();
    if (rc != 0) {
        fprintf(stderr, "msm-frontend exited with %d on SIGTERM\n", rc);
        print_file("frontend log", frontend_log, LOG_TAIL_LINES);
    }
    msm_test_redis_destroy(&redis_srv);
    if (work_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", work_dir);
        work_dir[0] = '\0';
    }
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

static int suite_init(void)
{
    if (start_all() == 0)
        return 0;
    release_all();
    return -1;
}

static int suite_clean(void)
{
    return release_all();
}

static void test_node_and_npm_present(void)
{
    int node = on_path("node"), npm = on_path("npm");
    if (!node || !npm)
        printf("\n  %s%s%s not found on PATH: this test needs Node.js (>= 18) and npm; "
               "scripts/install-deps.sh installs them\n",
               node ? "" : "node", !node && !npm ? " and " : "", npm ? "" : "npm");
    CU_ASSERT_TRUE(node);
    CU_ASSERT_TRUE(npm);
    tools_found = node && npm;
}

/* The pinned client from package.json, into the temporary folder (never the source tree). */
static void test_npm_install(void)
{
    if (!tools_found) {
        CU_FAIL("not attempted: node or npm is missing");
        return;
    }
    const char *files[] = {"package.json", "registry_client.js"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char from[600], to[600];
        snprintf(from, sizeof(from), "%s/%s", client_dir, files[i]);
        snprintf(to, sizeof(to), "%s/%s", work_dir, files[i]);
        CU_ASSERT_EQUAL_FATAL(copy_file(from, to), 0);
    }
    char log[320];
    snprintf(log, sizeof(log), "%s/npm.log", work_dir);
    char *argv[] = {"npm",      "install", "--no-audit", "--no-fund", "--no-update-notifier",
                    "--prefix", work_dir,  NULL};
    int rc = run(argv, log, NPM_TIMEOUT_MS);
    if (rc != 0) {
        printf("\n  npm install failed (exit %d): is the npm registry reachable?\n", rc);
        print_file("npm output", log, LOG_TAIL_LINES);
    }
    CU_ASSERT_EQUAL(rc, 0);
    client_installed = rc == 0;
}

static void test_registry_round_trip(void)
{
    if (!client_installed) {
        CU_FAIL("not attempted: the client is not installed");
        return;
    }
    char script[320], log[320];
    snprintf(script, sizeof(script), "%s/registry_client.js", work_dir);
    snprintf(log, sizeof(log), "%s/node.log", work_dir);
    char *argv[] = {"node", script, frontend_url, SUBJECT, NULL};
    int rc = run(argv, log, NODE_TIMEOUT_MS);
    printf("\n");
    print_file("registry_client.js", log, LOG_TAIL_LINES);
    if (rc != 0)
        printf("  registry_client.js exited with %d: every FAIL line above is a step the "
               "Confluent client could not do against msm-frontend\n",
               rc);
    CU_ASSERT_EQUAL(rc, 0);
}

static CU_TestInfo confluent_tests[] = {
    {"node and npm are installed", test_node_and_npm_present},
    {"npm install the pinned client", test_npm_install},
    {"register, read back, re-register, latest, encode/decode", test_registry_round_trip},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"confluent_client", suite_init, suite_clean, NULL, NULL, confluent_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_confluent_client FRONTEND CLIENT_DIR\n");
        return 2;
    }
    frontend_bin = argv[1];
    client_dir = argv[2];
    return msm_test_run(suites);
}
