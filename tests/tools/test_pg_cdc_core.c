/* SPDX-License-Identifier: MIT */
/* msm-pg-cdc's pure parts: LSN text, wal2json decoding (numbers kept exact, entities, key
 * moves, tombstones, limits) and the backlog's numbering and confirmation rule. */
#include "msm_test.h"
#include "pgc_backlog.h"
#include "pgc_decode.h"
#include "pgc_seq.h"

#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

static const pgc_decode_conf_t dconf = {.max_data_bytes = 1 << 20, .max_entity_bytes = 1024};

static void test_lsn_text(void)
{
    uint64_t v = 0;
    char buf[PGC_LSN_TEXT];
    CU_ASSERT_EQUAL(pgc_lsn_parse("0/16B2F38", &v), MSM_OK);
    CU_ASSERT_EQUAL(v, 0x16B2F38u);
    CU_ASSERT_EQUAL(pgc_lsn_parse("16/B374D848", &v), MSM_OK);
    CU_ASSERT_EQUAL(v, (uint64_t)0x16 << 32 | 0xB374D848u);
    CU_ASSERT_STRING_EQUAL(pgc_lsn_format(v, buf), "16/B374D848");
    CU_ASSERT_STRING_EQUAL(pgc_lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF");
    const char *bad[] = {"", "1/", "/1", "123456789/0", "1/2x", "1-2", "g/1", NULL};
    for (int i = 0; bad[i]; i++)
        CU_ASSERT_EQUAL(pgc_lsn_parse(bad[i], &v), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(pgc_lsn_parse(NULL, &v), MSM_ERR_PARSE);
}

static void test_seq_encoding(void)
{
    /* 256 TiB of WAL still gives sequences below 2^53 (exact in a JSON double). */
    uint64_t lsn = ((uint64_t)1 << 48) - 1;
    int64_t seq = pgc_seq_make(pgc_lsn_unit(lsn), PGC_SEQ_INDEX_MAX);
    CU_ASSERT(seq < ((int64_t)1 << 53));
    CU_ASSERT_EQUAL(pgc_seq_unit(seq), pgc_lsn_unit(lsn));
    CU_ASSERT(pgc_seq_make(pgc_lsn_unit(lsn) + 1, 0) > seq);
    CU_ASSERT(pgc_seq_make(PGC_SEQ_UNIT_MAX, PGC_SEQ_INDEX_MAX) == INT64_MAX);
}

/* Decodes @p text expecting one change rendered as @p json. */
static void expect_one(const char *text, const char *json)
{
    pgc_msg_t m;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(pgc_decode(text, strlen(text), &dconf, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_EQUAL(m.kind, PGC_MSG_CHANGES);
    CU_ASSERT_EQUAL_FATAL(m.nchanges, 1);
    if (strcmp(m.changes[0].json, json) != 0)
        fprintf(stderr, "\n got  %s\n want %s\n", m.changes[0].json, json);
    CU_ASSERT_STRING_EQUAL(m.changes[0].json, json);
    CU_ASSERT_EQUAL(m.changes[0].len, strlen(json));
    pgc_msg_clear(&m);
}

static void test_decode_txn(void)
{
    pgc_msg_t m;
    char err[256];
    const char *b = "{\"action\":\"B\",\"lsn\":\"0/16B2F38\",\"nextlsn\":\"0/16B2F68\"}";
    CU_ASSERT_EQUAL_FATAL(pgc_decode(b, strlen(b), &dconf, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_EQUAL(m.kind, PGC_MSG_BEGIN);
    CU_ASSERT_EQUAL(m.lsn, 0x16B2F38u);
    CU_ASSERT_EQUAL(m.next_lsn, 0x16B2F68u);
    pgc_msg_clear(&m);
    const char *c = "{\"action\":\"C\",\"lsn\":\"0/16B2F38\",\"nextlsn\":\"0/16B2F68\"}";
    CU_ASSERT_EQUAL_FATAL(pgc_decode(c, strlen(c), &dconf, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_EQUAL(m.kind, PGC_MSG_COMMIT);
    pgc_msg_clear(&m);
    /* Without include-lsn the sequence cannot be made: an error, never a guess. */
    const char *nolsn = "{\"action\":\"B\"}";
    CU_ASSERT_EQUAL(pgc_decode(nolsn, strlen(nolsn), &dconf, &m, err, sizeof(err)), MSM_ERR_PARSE);
    const char *t = "{\"action\":\"T\",\"schema\":\"public\",\"table\":\"users\"}";
    CU_ASSERT_EQUAL_FATAL(pgc_decode(t, strlen(t), &dconf, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_EQUAL(m.kind, PGC_MSG_SKIP);
    CU_ASSERT_STRING_EQUAL(m.what, "truncate");
    pgc_msg_clear(&m);
    const char *bad[] = {"",
                         "[1]",
                         "{\"action\":\"I\"}",
                         "{\"action\":\"I\",\"schema\":\"s\","
                         "\"table\":\"t\"}",
                         "{\"a\":1}",
                         "{\"action\":\"D\",\"schema\":\"s\","
                         "\"table\":\"t\",\"columns\":[]}",
                         "{\"action\":",
                         NULL};
    for (int i = 0; bad[i]; i++)
        CU_ASSERT_EQUAL(pgc_decode(bad[i], strlen(bad[i]), &dconf, &m, err, sizeof(err)),
                        MSM_ERR_PARSE);
}

static void test_decode_values_exact(void)
{
    expect_one("{\"action\":\"I\",\"schema\":\"public\",\"table\":\"users\",\"columns\":["
               "{\"name\":\"id\",\"type\":\"bigint\",\"value\":9223372036854775807},"
               "{\"name\":\"price\",\"type\":\"numeric(10,2)\",\"value\":12.50},"
               "{\"name\":\"big\",\"type\":\"numeric\",\"value\":-123456789012345678901234567890},"
               "{\"name\":\"whole\",\"type\":\"numeric\",\"value\":42},"
               "{\"name\":\"ratio\",\"type\":\"double precision\",\"value\":0.5},"
               "{\"name\":\"r\",\"type\":\"real\",\"value\":2},"
               "{\"name\":\"nan\",\"type\":\"double precision\",\"value\":null},"
               "{\"name\":\"name\",\"type\":\"text\",\"value\":\"12.5e3 \\\" 7.0\"},"
               "{\"name\":\"ok\",\"type\":\"boolean\",\"value\":true}],"
               "\"pk\":[{\"name\":\"id\",\"type\":\"bigint\"}]}",
               "{\"op\":\"create\",\"entity\":\"public.users/9223372036854775807\",\"data\":{"
               "\"id\":9223372036854775807,\"price\":\"12.50\",\"big\":"
               "\"-123456789012345678901234567890\",\"whole\":\"42\",\"ratio\":0.5,\"r\":2.0,"
               "\"nan\":null,\"name\":\"12.5e3 \\\" 7.0\",\"ok\":true}}");
}

static void test_decode_entities(void)
{
    /* A composite key, percent-encoded; a delete is a tombstone: no data. */
    expect_one("{\"action\":\"D\",\"schema\":\"public\",\"table\":\"items\",\"identity\":["
               "{\"name\":\"a\",\"type\":\"integer\",\"value\":1},"
               "{\"name\":\"b\",\"type\":\"text\",\"value\":\"x/y %.z\"}],"
               "\"pk\":[{\"name\":\"a\",\"type\":\"integer\"},{\"name\":\"b\",\"type\":\"text\"}]}",
               "{\"op\":\"delete\",\"entity\":\"public.items/1/x%2Fy%20%25.z\"}");
    /* Names with a dot are encoded, so the first '.' always ends the schema. */
    expect_one("{\"action\":\"I\",\"schema\":\"my.s\",\"table\":\"T\",\"columns\":["
               "{\"name\":\"k\",\"type\":\"text\",\"value\":\"v\"}],"
               "\"pk\":[{\"name\":\"k\",\"type\":\"text\"}]}",
               "{\"op\":\"create\",\"entity\":\"my%2Es.T/v\",\"data\":{\"k\":\"v\"}}");
    /* An update keeping its key; identity comes from the new row then. */
    expect_one("{\"action\":\"U\",\"schema\":\"public\",\"table\":\"users\",\"columns\":["
               "{\"name\":\"id\",\"type\":\"integer\",\"value\":7},"
               "{\"name\":\"n\",\"type\":\"text\",\"value\":\"b\"}],\"identity\":["
               "{\"name\":\"id\",\"type\":\"integer\",\"value\":7}],"
               "\"pk\":[{\"name\":\"id\",\"type\":\"integer\"}]}",
               "{\"op\":\"update\",\"entity\":\"public.users/7\",\"data\":{\"id\":7,\"n\":\"b\"}}");
    /* A table without a primary key: one entity for the table. */
    pgc_msg_t m;
    char err[256];
    const char *keyless = "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"log\",\"columns\":"
                          "[{\"name\":\"m\",\"type\":\"text\",\"value\":\"x\"}],\"pk\":[]}";
    CU_ASSERT_EQUAL_FATAL(pgc_decode(keyless, strlen(keyless), &dconf, &m, err, sizeof(err)),
                          MSM_OK);
    CU_ASSERT(m.keyless);
    CU_ASSERT_STRING_EQUAL(m.changes[0].json,
                           "{\"op\":\"create\",\"entity\":\"public.log\",\"data\":{\"m\":\"x\"}}");
    pgc_msg_clear(&m);
}

static void test_decode_key_move(void)
{
    const char *u = "{\"action\":\"U\",\"schema\":\"public\",\"table\":\"users\",\"columns\":["
                    "{\"name\":\"id\",\"type\":\"integer\",\"value\":10}],\"identity\":["
                    "{\"name\":\"id\",\"type\":\"integer\",\"value\":1}],"
                    "\"pk\":[{\"name\":\"id\",\"type\":\"integer\"}]}";
    pgc_msg_t m;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(pgc_decode(u, strlen(u), &dconf, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(m.nchanges, 2);
    CU_ASSERT_STRING_EQUAL(m.changes[0].json, "{\"op\":\"delete\",\"entity\":\"public.users/1\"}");
    CU_ASSERT_STRING_EQUAL(
        m.changes[1].json,
        "{\"op\":\"create\",\"entity\":\"public.users/10\",\"data\":{\"id\":10}}");
    pgc_msg_clear(&m);
}

static void test_decode_limits(void)
{
    pgc_decode_conf_t small = {.max_data_bytes = 64, .max_entity_bytes = 80};
    char text[4096], longv[1200];
    memset(longv, 'k', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    snprintf(text, sizeof(text),
             "{\"action\":\"I\",\"schema\":\"public\",\"table\":\"t\",\"columns\":["
             "{\"name\":\"k\",\"type\":\"text\",\"value\":\"%s\"}],"
             "\"pk\":[{\"name\":\"k\",\"type\":\"text\"}]}",
             longv);
    pgc_msg_t m;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(pgc_decode(text, strlen(text), &small, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT(m.truncated);
    CU_ASSERT_PTR_NOT_NULL(strstr(m.changes[0].json, "\"entity\":\"public.t/sha256:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m.changes[0].json, "\"data\":{\"msm_truncated_bytes\":"));
    char first[256];
    snprintf(first, sizeof(first), "%s", m.changes[0].json);
    pgc_msg_clear(&m);
    /* The hashed entity is stable: the same key, the same entity. */
    CU_ASSERT_EQUAL_FATAL(pgc_decode(text, strlen(text), &small, &m, err, sizeof(err)), MSM_OK);
    CU_ASSERT_STRING_EQUAL(m.changes[0].json, first);
    pgc_msg_clear(&m);
}

/* ---- the backlog ---- */

#define UNIT(n) ((uint64_t)(n) << PGC_SEQ_UNIT_SHIFT)

static void add(pgc_backlog_t *b, int n)
{
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(pgc_backlog_add(b, strdup("{\"op\":\"create\"}"), 15), MSM_OK);
}

static void test_backlog_numbering(void)
{
    pgc_backlog_t *b = pgc_backlog_new(100, 1 << 20);
    CU_ASSERT_EQUAL(pgc_backlog_add(b, strdup("{}"), 2), MSM_ERR_INVALID); /* no txn */
    pgc_backlog_begin(b, UNIT(3) + 100, UNIT(3) + 140);
    add(b, 3);
    pgc_backlog_commit(b);
    pgc_backlog_begin(b, UNIT(3) + 200, UNIT(3) + 240);
    add(b, 1);
    pgc_backlog_commit(b);
    pgc_backlog_begin(b, UNIT(5) + 8, UNIT(5) + 40);
    add(b, 1);
    pgc_backlog_commit(b);
    CU_ASSERT_EQUAL_FATAL(pgc_backlog_count(b), 5);
    int64_t want[] = {pgc_seq_make(3, 0), pgc_seq_make(3, 1), pgc_seq_make(3, 2),
                      pgc_seq_make(3, 3), pgc_seq_make(5, 0)};
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(pgc_backlog_at(b, i)->ch_seq, want[i]);
    CU_ASSERT_EQUAL(pgc_backlog_find(b, 0), 0);
    CU_ASSERT_EQUAL(pgc_backlog_find(b, want[1]), 2);
    CU_ASSERT_EQUAL(pgc_backlog_find(b, want[4]), 5);
    pgc_backlog_ack(b, want[2]);
    CU_ASSERT_EQUAL(pgc_backlog_count(b), 2);
    pgc_backlog_ack(b, want[0]); /* lower: nothing changes */
    CU_ASSERT_EQUAL(pgc_backlog_acked(b), want[2]);
    /* A new stream numbers the same changes the same way; the acknowledged are not kept. */
    pgc_backlog_reset(b);
    CU_ASSERT_EQUAL(pgc_backlog_count(b), 0);
    pgc_backlog_begin(b, UNIT(3) + 100, UNIT(3) + 140);
    add(b, 3);
    pgc_backlog_commit(b);
    pgc_backlog_begin(b, UNIT(3) + 200, UNIT(3) + 240);
    add(b, 1);
    pgc_backlog_commit(b);
    CU_ASSERT_EQUAL_FATAL(pgc_backlog_count(b), 1);
    CU_ASSERT_EQUAL(pgc_backlog_at(b, 0)->ch_seq, want[3]);
    /* A unit past what an int64 numbers is refused, not wrapped. */
    pgc_backlog_begin(b, UNIT(PGC_SEQ_UNIT_MAX + 1), UNIT(PGC_SEQ_UNIT_MAX + 1) + 40);
    CU_ASSERT_EQUAL(pgc_backlog_add(b, strdup("{}"), 2), MSM_ERR_TOOLARGE);
    pgc_backlog_free(b);
}

static void test_backlog_limits(void)
{
    pgc_backlog_t *b = pgc_backlog_new(2, 1 << 20);
    pgc_backlog_begin(b, UNIT(1), UNIT(1) + 40);
    add(b, 1);
    CU_ASSERT_FALSE(pgc_backlog_full(b));
    add(b, 1);
    CU_ASSERT_TRUE(pgc_backlog_full(b));
    add(b, 2); /* a message's second change still fits */
    pgc_backlog_ack(b, pgc_seq_make(1, 2));
    CU_ASSERT_FALSE(pgc_backlog_full(b));
    pgc_backlog_free(b);
    b = pgc_backlog_new(100, 20);
    pgc_backlog_begin(b, UNIT(1), UNIT(1) + 40);
    add(b, 2);
    CU_ASSERT_TRUE(pgc_backlog_full(b)); /* 30 bytes */
    pgc_backlog_free(b);
}

/* The slot is confirmed only past acknowledged transactions and never inside a unit that
 * still has change-bearing transactions on both sides (README.md "Acknowledgement"). */
static void test_backlog_confirmation(void)
{
    pgc_backlog_t *b = pgc_backlog_new(100, 1 << 20);
    pgc_backlog_progress(b, UNIT(2) + 500);
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), UNIT(2) + 500); /* no change yet */
    uint64_t o1 = UNIT(2) + 1000;
    pgc_backlog_begin(b, o1, o1 + 40);
    pgc_backlog_progress(b, UNIT(9)); /* ignored inside a transaction */
    add(b, 2);
    pgc_backlog_commit(b);
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o1); /* unacknowledged: stay before it */
    pgc_backlog_ack(b, pgc_seq_make(2, 0));
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o1); /* half of it */
    pgc_backlog_ack(b, pgc_seq_make(2, 1));
    /* All acknowledged, but unit 2 may still grow: keep its first commit. */
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o1);
    pgc_backlog_progress(b, UNIT(2) + 9000);
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o1);
    /* The stream passed unit 2: nothing can join it any more. */
    pgc_backlog_progress(b, UNIT(3) + 16);
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), UNIT(3) + 16);
    uint64_t o2 = UNIT(3) + 400, o3 = UNIT(4) + 64;
    pgc_backlog_begin(b, o2, o2 + 40);
    add(b, 1);
    pgc_backlog_commit(b);
    pgc_backlog_begin(b, o3, o3 + 40);
    add(b, 2);
    pgc_backlog_commit(b);
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o2);
    pgc_backlog_ack(b, pgc_seq_make(3, 0));
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o3); /* unit 3 done, unit 4 whole */
    pgc_backlog_ack(b, pgc_seq_make(4, 0));
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o3);
    pgc_backlog_ack(b, pgc_seq_make(4, 1));
    CU_ASSERT_EQUAL(pgc_backlog_confirmable(b), o3);
    /* Never backwards, even after a reset (the server keeps what it was told). */
    pgc_backlog_reset(b);
    pgc_backlog_progress(b, UNIT(4) + 100);
    CU_ASSERT(pgc_backlog_confirmable(b) >= UNIT(4) + 100);
    pgc_backlog_free(b);
}

int main(void)
{
    CU_TestInfo seq[] = {
        {"lsn text", test_lsn_text}, {"sequence encoding", test_seq_encoding}, CU_TEST_INFO_NULL};
    CU_TestInfo decode[] = {{"begin, commit, skip, errors", test_decode_txn},
                            {"values keep their exact text", test_decode_values_exact},
                            {"entities and tombstones", test_decode_entities},
                            {"an update moving its key", test_decode_key_move},
                            {"data and entity limits", test_decode_limits},
                            CU_TEST_INFO_NULL};
    CU_TestInfo backlog[] = {{"numbering", test_backlog_numbering},
                             {"limits", test_backlog_limits},
                             {"confirmation", test_backlog_confirmation},
                             CU_TEST_INFO_NULL};
    CU_SuiteInfo suites[] = {{"pg_cdc.seq", NULL, NULL, NULL, NULL, seq},
                             {"pg_cdc.decode", NULL, NULL, NULL, NULL, decode},
                             {"pg_cdc.backlog", NULL, NULL, NULL, NULL, backlog},
                             CU_SUITE_INFO_NULL};
    return msm_test_run(suites);
}
