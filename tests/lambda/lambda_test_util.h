/* SPDX-License-Identifier: MIT */
/* Helpers shared by the lambda and msmctl tests: a lambda as a child process, temporary
 * directories and a blocking libcurl client. Test code only. */
#ifndef LAMBDA_TEST_UTIL_H
#define LAMBDA_TEST_UTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "msm_test.h" /* msm_test_free_port() */
#include "msm_test_proc.h"

/** Makes a fresh temporary directory into @p buf. @returns 0 or -1. */
int lt_tmpdir(char *buf, size_t n);
/** Removes the files directly inside @p dir, then @p dir. */
void lt_rmdir(const char *dir);

/**
 * @brief Starts `bin --port P --bind 127.0.0.1 args...` (P a free port, kept in c->port) with
 * output to a log file in @p dir and waits (at most 10 s) until its /healthz answers 200.
 * Stop it with msm_test_proc_stop().
 * @param args NULL-terminated extra arguments
 * @returns 0, or -1 (the child is gone then).
 */
int lt_child_start(msm_test_proc_t *c, const char *dir, const char *bin, const char *const *args);

/**
 * @brief Starts the real msm-frontend @p bin on a free port of loopback (fe->port) against
 * @p redis_url and namespace @p ns, its log in @p dir, with the NULL-terminated @p extra
 * flags, and waits (15 s at most) until /readyz answers.
 * @returns 0, or -1 (a line says where the log is).
 */
int lt_frontend_start(msm_test_proc_t *fe, const char *bin, const char *dir,
                      const char *redis_url, const char *ns, const char *const *extra);

/** One blocking HTTP request. */
typedef struct {
    const char *method;      /* NULL = POST when body is set, else GET */
    const char *path;        /* NULL = "/" */
    const char *headers[32]; /* "Name: value", NULL-terminated */
    const void *body;
    size_t body_len;
    long timeout_ms; /* 0 = 10000 */
    /* results */
    int rc; /* CURLcode */
    long status;
    char *rbody; /* NUL-terminated, malloc'd */
    size_t rlen;
    char rhdrs[8192];
    double secs;
} lt_http_t;

/** @brief Performs @p h against http://127.0.0.1:@p port. */
void lt_http(int port, lt_http_t *h);
/** @brief Frees the results of @p h. */
void lt_http_free(lt_http_t *h);
/** @brief A response header's value (case-insensitive name) into @p out, or NULL. */
const char *lt_http_header(const lt_http_t *h, const char *name, char *out, size_t n);

/** @brief The whole file as a malloc'd NUL-terminated string (NULL when unreadable). */
char *lt_read_file(const char *path, size_t *len);

/** @brief Monotonic milliseconds. */
double lt_now_ms(void);

/** @brief Unix time in milliseconds. */
long long lt_unix_ms(void);

/** @brief A suite's setup: libcurl's global init and a fresh temporary @p dir. @returns 0. */
int lt_suite_setup(char *dir, size_t n);
/** @brief ... and its teardown. */
void lt_suite_teardown(const char *dir);

#endif
