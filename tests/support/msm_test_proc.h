/* SPDX-License-Identifier: MIT */
/* Test support: a child process (a daemon, a lambda, a tool run to its end) with its output
 * in a log file, a wait until it answers HTTP, and a stop that always reaps it. */
#ifndef MSM_TEST_PROC_H
#define MSM_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define MSM_TEST_PROC_MAX_ARGS  48
#define MSM_TEST_PROC_ARGS_SIZE 4096
/** The grace most stops give a process between their signal and SIGKILL. */
#define MSM_TEST_PROC_GRACE_MS 10000

/**
 * One child process. Zero it, fill log (and port, death_signal, own_group as needed), add
 * the arguments, then start it. The arguments are kept inside, so it can be started again
 * (after a stop) with the same command line, and nothing needs freeing.
 */
typedef struct {
    pid_t pid;        /* > 0 from start until stop (or wait_ready) reaps it */
    int port;         /* where it serves HTTP, for msm_test_proc_wait_ready() */
    char log[512];    /* stdout and stderr are appended here; "" keeps the test's own */
    int death_signal; /* sent to it when the test dies (0: none) */
    int own_group;    /* 1: a process group of its own, and every signal goes to the group */
    /* the command line, as msm_test_proc_arg() keeps it */
    int argc;
    int args_overflow; /* an argument did not fit: start refuses */
    size_t args_len;
    size_t arg_at[MSM_TEST_PROC_MAX_ARGS];
    char args[MSM_TEST_PROC_ARGS_SIZE];
} msm_test_proc_t;

/**
 * @brief Appends one argument, printf-formatted; the first is the program (searched on PATH
 * when it has no '/').
 * @returns 0, or -1 when it does not fit (msm_test_proc_start() then fails).
 */
int msm_test_proc_arg(msm_test_proc_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/**
 * @brief Starts the command line in a child process, its stdout and stderr appended to
 * p->log, with default signal handling (no blocked signals, SIGPIPE not ignored).
 * @returns 0 (p->pid set), or -1 when there is no command line or fork() failed.
 */
int msm_test_proc_start(msm_test_proc_t *p);

/**
 * @brief Waits until GET http://127.0.0.1:<p->port><path> answers 200.
 * @param path NULL for "/readyz"
 * @returns 0; -1 after @p timeout_ms, or as soon as the process has exited (it is reaped
 * then, p->pid 0). A process that is still running is left running.
 */
int msm_test_proc_wait_ready(msm_test_proc_t *p, const char *path, int timeout_ms);

/**
 * @brief Sends @p sig (0: none, e.g. for a process that ends by itself) and waits up to
 * @p grace_ms for it to exit; SIGKILL after that. The process is reaped in every case.
 * @returns its exit status, 128+signal when a signal ended it, or -1 when it had to be
 * killed after the grace (or was not running).
 */
int msm_test_proc_stop(msm_test_proc_t *p, int sig, int grace_ms);

/**
 * @brief Starts tools/msm-kafka-mock (@p bin) with @p brokers brokers as @p p (its output in
 * @p log, SIGTERM when the caller dies) and reads the bootstrap servers it prints first.
 * @returns 0 with "127.0.0.1:PORT,…" in @p bootstrap, or -1 (the process stopped again)
 * when it printed none within 5 s.
 */
int msm_test_kafka_mock_start(msm_test_proc_t *p,
                              const char *bin,
                              int brokers,
                              const char *log,
                              char *bootstrap,
                              size_t bootstrap_size);

#endif
