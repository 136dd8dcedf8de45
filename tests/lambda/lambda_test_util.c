/* SPDX-License-Identifier: MIT */
/* Test helpers: a lambda as a child process, temporary directories, a blocking HTTP client. */
#include "lambda_test_util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double lt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

long long lt_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lt_suite_setup(char *dir, size_t n)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return lt_tmpdir(dir, n);
}

void lt_suite_teardown(const char *dir)
{
    if (getenv("MSM_TEST_KEEP")) /* the children's logs, to read after a failure */
        fprintf(stderr, "kept %s\n", dir);
    else
        lt_rmdir(dir);
    curl_global_cleanup();
}

int lt_frontend_start(msm_test_proc_t *fe, const char *bin, const char *dir,
                      const char *redis_url, const char *ns, const char *const *extra)
{
    memset(fe, 0, sizeof(*fe));
    fe->port = msm_test_free_port();
    snprintf(fe->log, sizeof(fe->log), "%s/frontend.log", dir);
    msm_test_proc_arg(fe, "%s", bin);
    msm_test_proc_arg(fe, "--redis.url=%s", redis_url);
    msm_test_proc_arg(fe, "--namespace=%s", ns);
    msm_test_proc_arg(fe, "--http.port=%d", fe->port);
    msm_test_proc_arg(fe, "--http.bind=127.0.0.1");
    for (int i = 0; extra && extra[i]; i++)
        msm_test_proc_arg(fe, "%s", extra[i]);
    if (msm_test_proc_start(fe) != 0 || msm_test_proc_wait_ready(fe, NULL, 15000) != 0) {
        fprintf(stderr, "msm-frontend not ready; see %s\n", fe->log);
        return -1;
    }
    return 0;
}

int lt_tmpdir(char *buf, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, n, "%s/msm-lambda-test-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf) ? 0 : -1;
}

void lt_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int lt_child_start(msm_test_proc_t *c, const char *dir, const char *bin, const char *const *args)
{
    static int seq;
    memset(c, 0, sizeof(*c));
    c->port = msm_test_free_port();
    snprintf(c->log, sizeof(c->log), "%s/child-%d.log", dir, ++seq);
    msm_test_proc_arg(c, "%s", bin);
    msm_test_proc_arg(c, "--port");
    msm_test_proc_arg(c, "%d", c->port);
    msm_test_proc_arg(c, "--bind");
    msm_test_proc_arg(c, "127.0.0.1");
    for (int i = 0; args && args[i]; i++)
        msm_test_proc_arg(c, "%s", args[i]);
    if (msm_test_proc_start(c) != 0)
        return -1;
    if (msm_test_proc_wait_ready(c, "/healthz", 10000) == 0)
        return 0;
    msm_test_proc_stop(c, SIGKILL, 2000);
    return -1;
}

/* ---- HTTP ---- */

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
    lt_http_t *h = ud;
    size_t len = sz * n;
    char *b = realloc(h->rbody, h->rlen + len + 1);
    if (!b)
        return 0;
    memcpy(b + h->rlen, p, len);
    h->rbody = b;
    h->rlen += len;
    h->rbody[h->rlen] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    lt_http_t *h = ud;
    size_t len = sz * n, have = strlen(h->rhdrs);
    if (have + len < sizeof(h->rhdrs)) {
        memcpy(h->rhdrs + have, p, len);
        h->rhdrs[have + len] = '\0';
    }
    return len;
}

void lt_http(int port, lt_http_t *h)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, h->path ? h->path : "/");
    CURL *e = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    for (int i = 0; h->headers[i]; i++)
        hdrs = curl_slist_append(hdrs, h->headers[i]);
    hdrs = curl_slist_append(hdrs, "Expect:");
    h->rhdrs[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms ? h->timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (h->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)h->body_len);
    }
    const char *method = h->method ? h->method : (h->body ? "POST" : "GET");
    if (strcmp(method, "POST") == 0 && !h->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    double t0 = lt_now_ms();
    h->rc = (int)curl_easy_perform(e);
    h->secs = (lt_now_ms() - t0) / 1000.0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &h->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(e);
}

void lt_http_free(lt_http_t *h)
{
    free(h->rbody);
    h->rbody = NULL;
    h->rlen = 0;
}

const char *lt_http_header(const lt_http_t *h, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *line = h->rhdrs; line && *line;) {
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r\n");
            snprintf(out, n, "%.*s", (int)vl, v);
            return out;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}

char *lt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1024 + 1 > cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}
