/* SPDX-License-Identifier: MIT */
/* msm-kafka-mock: hosts a librdkafka mock cluster (the real Kafka protocol, in memory) on
 * loopback TCP ports, prints its bootstrap servers on the first line of stdout, and serves
 * until SIGINT or SIGTERM. So the daemons run on the Kafka log as separate processes:
 *
 *     brokers=$(msm-kafka-mock --brokers 3 | head -1) ...
 *     MSM_LOG_BACKEND=kafka MSM_KAFKA_BROKERS=$brokers msm-frontend
 *
 * The cluster lives in this process's memory: it is gone when the process ends. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: msm-kafka-mock [--brokers N]\n"
          "\n"
          "Runs librdkafka's mock Kafka cluster on loopback TCP ports, prints its bootstrap\n"
          "servers (host:port,...) on the first line of stdout and serves until SIGINT or\n"
          "SIGTERM. For development and tests only: everything is in memory.\n"
          "\n"
          "  --brokers N   brokers in the cluster (1..16, default 3)\n"
          "  --help        this text\n"
          "\n"
          "The mock cluster has no CreateTopics: topics are auto-created with 4 partitions,\n"
          "which msm's Kafka driver reports (docs/log-kafka.md).\n",
          out);
}

/* The integer value of flag @p name at argv[*i] (as "--name N" or "--name=N"), or -1. */
static long flag_value(int argc, char **argv, int *i, const char *name, long lo, long hi)
{
    size_t n = strlen(name);
    const char *v = NULL;
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
        v = argv[*i] + n + 1;
    else if (strcmp(argv[*i], name) == 0 && *i + 1 < argc)
        v = argv[++*i];
    if (!v)
        return -2; /* not this flag */
    char *end;
    long x = strtol(v, &end, 10);
    return *v && !*end && x >= lo && x <= hi ? x : -1;
}

int main(int argc, char **argv)
{
    long brokers = 3;
    for (int i = 1; i < argc; i++) {
        long v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((v = flag_value(argc, argv, &i, "--brokers", 1, 16)) != -2) {
            brokers = v;
        } else {
            fprintf(stderr, "msm-kafka-mock: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if (v == -1) {
            fprintf(stderr, "msm-kafka-mock: bad value for %s\n", argv[i]);
            return 2;
        }
    }
    /* Signals are taken by sigwait() below, not by librdkafka's threads. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char err[256], num[16];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(num, sizeof(num), "%ld", brokers);
    /* test.mock.num.brokers makes the client host the cluster: the documented way. */
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", num, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "log_level", "4", err, sizeof(err))) {
        fprintf(stderr, "msm-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "msm-kafka-mock: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(rk);
    if (!mc) {
        fprintf(stderr, "msm-kafka-mock: this librdkafka has no mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "msm-kafka-mock: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rd_kafka_destroy(rk);
    return 0;
}
