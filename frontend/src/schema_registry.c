/* SPDX-License-Identifier: MIT */
/* The schema registry of API.md, wire-compatible with the Confluent Schema Registry REST
 * subset (docs/schemas.md): subjects with versions, global ids, compatibility per subject.
 * State is in Redis (msm/schema_store.h keys); registration is
 *   lookup (one script: is this schema known? in this subject? latest version? level?)
 *   -> compatibility check in C against the latest version (compiled, cached by id)
 *   -> register (one script, which refuses if the subject moved on since the lookup; the
 *      whole sequence then runs again, so concurrent registrations stay consistent).
 * Errors carry API.md's body plus Confluent's top-level "error_code" and "message", so
 * both kinds of client read them. */
#include "fe_int.h"

#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/schema_store.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC          "schemas"
#define KEY_MAX      600
#define SUBJECT_MAX  255
#define RETRIES_MAX  5

/* Confluent's error codes. */
#define CE_SUBJECT_NOT_FOUND 40401
#define CE_VERSION_NOT_FOUND 40402
#define CE_SCHEMA_NOT_FOUND  40403
#define CE_INCOMPATIBLE      409
#define CE_INVALID_SCHEMA    42201
#define CE_INVALID_VERSION   42202
#define CE_INVALID_LEVEL     42203
#define CE_BACKEND           50001

typedef enum { LEVEL_BACKWARD, LEVEL_FORWARD, LEVEL_FULL, LEVEL_NONE } level_t;
static const char *const level_names[] = {"BACKWARD", "FORWARD", "FULL", "NONE"};
#define LEVEL_DEFAULT LEVEL_BACKWARD

/* ---- scripts ---- */

/* KEYS: fingerprints, versions, config; ARGV: fingerprint, subject.
 * -> {known id or 0, its version in the subject or 0, versions, latest id or 0, level} */
static const char LOOKUP_LUA[] =
    "local id = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local vers = redis.call('LRANGE', KEYS[2], 0, -1)\n"
    "local at = 0\n"
    "if id then for i, v in ipairs(vers) do if v == id then at = i break end end end\n"
    "local level = redis.call('HGET', KEYS[3], ARGV[2]) or redis.call('HGET', KEYS[3], '')\n"
    "return {tonumber(id or 0), at, #vers, tonumber(vers[#vers] or 0), level or ''}\n";

/* KEYS: fingerprints, versions, subjects, next_id, registry version;
 * ARGV: fingerprint, subject, expected version count, type, schema, message_name,
 *       schema key prefix. -> {id, version}, or -1 when the subject changed meanwhile. */
static const char REGISTER_LUA[] =
    "if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[3]) then return -1 end\n"
    "local id = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not id then\n"
    "  id = redis.call('INCR', KEYS[4])\n"
    "  redis.call('HSET', ARGV[7] .. id, 'type', ARGV[4], 'schema', ARGV[5],\n"
    "             'message_name', ARGV[6])\n"
    "  redis.call('HSET', KEYS[1], ARGV[1], id)\n"
    "end\n"
    "local n = redis.call('RPUSH', KEYS[2], id)\n"
    "redis.call('SADD', KEYS[3], ARGV[2])\n"
    "redis.call('INCR', KEYS[5])\n"
    "return {tonumber(id), n}\n";

/* KEYS: versions; ARGV: version (-1 = latest), schema key prefix.
 * -> {} when the subject has no versions; {0, n} when the version does not exist;
 *    {id, version, HGETALL of the schema...} */
static const char VERSION_LUA[] =
    "local n = redis.call('LLEN', KEYS[1])\n"
    "if n == 0 then return {} end\n"
    "local v = tonumber(ARGV[1])\n"
    "if v == -1 then v = n end\n"
    "if v < 1 or v > n then return {0, n} end\n"
    "local id = redis.call('LINDEX', KEYS[1], v - 1)\n"
    "local r = {tonumber(id), v}\n"
    "for _, x in ipairs(redis.call('HGETALL', ARGV[2] .. id)) do r[#r + 1] = x end\n"
    "return r\n";

int fe_schema_scripts(fe_t *fe)
{
    fe->fe_sr_lookup = msm_redis_script_new(LOOKUP_LUA);
    fe->fe_sr_register = msm_redis_script_new(REGISTER_LUA);
    fe->fe_sr_version = msm_redis_script_new(VERSION_LUA);
    return fe->fe_sr_lookup && fe->fe_sr_register && fe->fe_sr_version ? MSM_OK
                                                                        : MSM_ERR_NOMEM;
}

/* ---- answers ---- */

/* Confluent clients read these top-level members of an error body. */
static json_t *with_confluent(json_t *b, int confluent_code, const char *message)
{
    if (b) {
        json_object_set_new(b, "error_code", json_integer(confluent_code));
        json_object_set_new(b, "message", json_string(message));
    }
    return b;
}

static json_t *error_body(const char *code, int confluent_code, const char *message,
                          json_t *details)
{
    return with_confluent(msm_json_error_body(code, message, details), confluent_code, message);
}

/* 400 with the collected details. */
static void respond_invalid(msm_http_req_t *req, msm_json_err_t *e, int confluent_code)
{
    msm_http_respond_json(req, 400, with_confluent(msm_json_err_body(e, NULL), confluent_code,
                                                   msm_json_err_message(e)));
}

static void respond_error(msm_http_req_t *req, int status, const char *code,
                          int confluent_code, const char *message)
{
    msm_http_respond_json(req, status, error_body(code, confluent_code, message, NULL));
}

static void call_error(fe_call_t *c, int status, const char *code, int confluent_code,
                       const char *message)
{
    fe_call_json(c, status, error_body(code, confluent_code, message, NULL));
}

static void call_unavailable(fe_call_t *c, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "backend unavailable: %.400s", why ? why : "unknown error");
    call_error(c, 503, "UNAVAILABLE", CE_BACKEND, msg);
}

/* Answers 503 and returns 1 when Redis gave no good reply. */
static int redis_failed(fe_call_t *c, const redisReply *reply, const char *err)
{
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        call_unavailable(c, why);
    return why != NULL;
}

static int subject_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SUBJECT_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    }
    return 1;
}

static void subject_not_found(msm_http_req_t *req, const char *subject)
{
    char msg[SUBJECT_MAX + 64];
    snprintf(msg, sizeof(msg), "subject '%.*s' not found", SUBJECT_MAX,
             subject ? subject : "");
    respond_error(req, 404, "NOT_FOUND", CE_SUBJECT_NOT_FOUND, msg);
}

static int key(const fe_t *fe, char *buf, const char *fmt, const char *arg)
{
    return msm_redis_key(fe->fe_deps.redis, buf, KEY_MAX, fmt, arg);
}

static int level_parse(const char *s, level_t *out)
{
    for (size_t i = 0; s && i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (level_t)i;
            return MSM_OK;
        }
    }
    return MSM_ERR_INVALID;
}

/* SHA-256 hex of "<TYPE>\n<canonical>": the global identity of a schema. */
static int fingerprint(const msm_schema_t *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    const char *type = msm_schema_type_name(msm_schema_type(s));
    const char *canon = msm_schema_canonical(s);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, type, strlen(type)) && EVP_DigestUpdate(ctx, "\n", 1) &&
             EVP_DigestUpdate(ctx, canon, strlen(canon)) && EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    if (!ok || n != sizeof(md))
        return MSM_ERR_NOMEM;
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return MSM_OK;
}

/* ---- register and check ---- */

typedef struct {
    fe_call_t base;
    int check_only; /* POST /compatibility/...: answer is_compatible, store nothing */
    char *subject;
    char *text;
    msm_schema_t *schema;
    char fp[65];
    int expected;   /* versions the lookup saw */
    level_t level;
    int attempts;
} reg_t;

static void reg_cleanup(fe_call_t *c)
{
    reg_t *g = (reg_t *)c;
    free(g->subject);
    free(g->text);
    msm_schema_free(g->schema);
}

static void lookup_start(reg_t *g);

static void on_registered(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    reg_t *g = opaque;
    if (redis_failed(&g->base, reply, err))
        return;
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == -1) {
        lookup_start(g); /* another version landed meanwhile: check against it */
        return;
    }
    long long id = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
                       ? msm_redis_reply_int(reply->element[0], 0)
                       : 0;
    if (id <= 0) {
        call_unavailable(&g->base, "unexpected reply from Redis");
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "subject %s: version %lld is schema id %lld", g->subject,
            msm_redis_reply_int(reply->element[1], 0), id);
    fe_schemas_changed(g->base.fe);
    /* Compiled already: the first publish under this id need not fetch and compile it. */
    msm_schema_store_put(fe_schema_store(g->base.fe), (int)id, g->schema);
    g->schema = NULL;
    fe_call_json(&g->base, 200, json_pack("{s:I}", "id", (json_int_t)id));
}

static void register_start(reg_t *g)
{
    fe_t *fe = g->base.fe;
    char k_fp[KEY_MAX], k_vers[KEY_MAX], k_subjects[KEY_MAX], k_next[KEY_MAX],
        k_version[KEY_MAX], prefix[KEY_MAX], expected[24];
    key(fe, k_fp, "%s", MSM_KEY_SCHEMA_FINGERPRINTS);
    key(fe, k_vers, MSM_KEY_SCHEMA_VERSIONS, g->subject);
    key(fe, k_subjects, "%s", MSM_KEY_SCHEMA_SUBJECTS);
    key(fe, k_next, "%s", MSM_KEY_SCHEMA_NEXT_ID);
    key(fe, k_version, "%s", MSM_KEY_VERSION);
    key(fe, prefix, "%s", MSM_KEY_SCHEMA_ID_PREFIX);
    snprintf(expected, sizeof(expected), "%d", g->expected);
    const char *mn = msm_schema_message_name(g->schema);
    const char *argv[] = {k_fp, k_vers, k_subjects, k_next, k_version, g->fp, g->subject,
                          expected, msm_schema_type_name(msm_schema_type(g->schema)),
                          g->text, mn ? mn : "", prefix};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_sr_register, on_registered, g, 5,
                            (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    if (rc != MSM_OK)
        call_unavailable(&g->base, msm_err_str(rc));
}

/* The latest version's schema arrived: check, then register or answer. */
static void on_latest(const msm_schema_t *latest, int id, int err, const char *why,
                      void *opaque)
{
    reg_t *g = opaque;
    if (fe_call_aborted(&g->base))
        return;
    if (!latest) {
        char msg[512];
        snprintf(msg, sizeof(msg), "latest version (schema id %d): %s", id,
                 why ? why : msm_err_str(err));
        if (err == MSM_ERR_BACKEND)
            call_unavailable(&g->base, msg);
        else
            call_error(&g->base, 500, "INTERNAL", 50000, msg);
        return;
    }
    char reason[512] = "";
    int ok = 1;
    if (g->level == LEVEL_BACKWARD || g->level == LEVEL_FULL)
        ok = msm_schema_can_read(g->schema, latest, reason, sizeof(reason)) == MSM_OK;
    if (ok && (g->level == LEVEL_FORWARD || g->level == LEVEL_FULL))
        ok = msm_schema_can_read(latest, g->schema, reason, sizeof(reason)) == MSM_OK;
    if (g->check_only) {
        json_t *body = json_pack("{s:b}", "is_compatible", ok);
        if (body && !ok)
            json_object_set_new(body, "messages", json_pack("[s]", reason));
        fe_call_json(&g->base, 200, body);
        return;
    }
    if (!ok) {
        char msg[700];
        snprintf(msg, sizeof(msg),
                 "schema is incompatible with the latest version of subject '%s' (%s): %s",
                 g->subject, level_names[g->level], reason);
        call_error(&g->base, 409, "INCOMPATIBLE_SCHEMA", CE_INCOMPATIBLE, msg);
        return;
    }
    register_start(g);
}

static void on_lookup(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    reg_t *g = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5))
        why = "unexpected reply from Redis";
    if (why) {
        call_unavailable(&g->base, why);
        return;
    }
    long long id = msm_redis_reply_int(reply->element[0], 0);
    long long at = msm_redis_reply_int(reply->element[1], 0);
    g->expected = (int)msm_redis_reply_int(reply->element[2], 0);
    long long latest = msm_redis_reply_int(reply->element[3], 0);
    const redisReply *lv = reply->element[4];
    if (lv->type != REDIS_REPLY_STRING || level_parse(lv->str, &g->level) != MSM_OK)
        g->level = LEVEL_DEFAULT;
    if (!g->check_only && id > 0 && at > 0) { /* already registered here: same id */
        fe_call_json(&g->base, 200, json_pack("{s:I}", "id", (json_int_t)id));
        return;
    }
    if (latest <= 0 || g->level == LEVEL_NONE) {
        if (g->check_only)
            fe_call_json(&g->base, 200, json_pack("{s:b}", "is_compatible", 1));
        else
            register_start(g);
        return;
    }
    if (msm_schema_store_get(fe_schema_store(g->base.fe), (int)latest, on_latest, g) != MSM_OK)
        call_error(&g->base, 500, "INTERNAL", 50000, "out of memory");
}

static void lookup_start(reg_t *g)
{
    fe_t *fe = g->base.fe;
    if (++g->attempts > RETRIES_MAX) {
        call_error(&g->base, 409, "CONFLICT", 40900,
                   "the subject keeps changing under concurrent registrations; try again");
        return;
    }
    char k_fp[KEY_MAX], k_vers[KEY_MAX], k_conf[KEY_MAX];
    key(fe, k_fp, "%s", MSM_KEY_SCHEMA_FINGERPRINTS);
    key(fe, k_vers, MSM_KEY_SCHEMA_VERSIONS, g->subject);
    key(fe, k_conf, "%s", MSM_KEY_SCHEMA_CONFIG);
    const char *argv[] = {k_fp, k_vers, k_conf, g->fp, g->subject};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_sr_lookup, on_lookup, g, 3, 5, argv, NULL);
    if (rc != MSM_OK)
        call_unavailable(&g->base, msm_err_str(rc));
}

/* Body {"schema":"…","schemaType"?:"AVRO","messageName"?:"pkg.Msg","references"?:[]} */
static msm_schema_t *body_schema(msm_http_req_t *req, char **text_out)
{
    static const char *const known[] = {"schema", "schemaType", "references", "messageName",
                                        "metadata", "ruleSet", "version", "id", NULL};
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return NULL;
    msm_json_err_t e;
    msm_json_err_init(&e);
    const char *text = NULL, *type_name = "AVRO", *message_name = NULL;
    json_t *refs = NULL;
    msm_schema_type_t type = MSM_SCHEMA_AVRO;
    if (msm_json_expect_object(&e, body) == MSM_OK) {
        msm_json_check_known(&e, body, known);
        msm_json_get_str(&e, body, "schema", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &text);
        msm_json_get_str(&e, body, "schemaType", MSM_JSON_NULLABLE, &type_name);
        msm_json_get_str(&e, body, "messageName", MSM_JSON_NULLABLE, &message_name);
        msm_json_get_array(&e, body, "references", MSM_JSON_NULLABLE, &refs);
        if (type_name && msm_schema_type_parse(type_name, &type) != MSM_OK)
            msm_json_err_add(&e, "schemaType", "must be AVRO, JSON or PROTOBUF");
        if (json_array_size(refs) > 0)
            msm_json_err_add(&e, "references", "schema references are not supported");
    }
    msm_schema_t *s = NULL;
    if (msm_json_err_count(&e) == 0) {
        char why[512];
        s = msm_schema_compile(type, text, strlen(text), message_name, why, sizeof(why));
        if (!s) {
            char msg[600];
            snprintf(msg, sizeof(msg), "invalid %s schema: %s", msm_schema_type_name(type),
                     why);
            json_t *d = json_pack("[{s:s,s:s}]", "field", "schema", "description", why);
            msm_http_respond_json(req, 400, error_body("INVALID_SCHEMA", CE_INVALID_SCHEMA,
                                                       msg, d));
        } else if (!(*text_out = strdup(text))) {
            msm_schema_free(s);
            s = NULL;
            msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        }
    } else {
        respond_invalid(req, &e, CE_INVALID_SCHEMA);
    }
    msm_json_err_deinit(&e);
    json_decref(body);
    return s;
}

static void register_or_check(msm_http_req_t *req, fe_t *fe, int check_only)
{
    const char *subject = msm_http_req_param(req, "subject");
    if (!subject_valid(subject)) {
        respond_error(req, 400, "INVALID_ARGUMENT", 42200,
                      "subject must be 1-255 characters without control characters");
        return;
    }
    char *text = NULL;
    msm_schema_t *s = body_schema(req, &text);
    if (!s)
        return;
    reg_t *g = fe_call_new(fe, req, sizeof(*g));
    if (!g || !(g->subject = strdup(subject)) || fingerprint(s, g->fp) != MSM_OK) {
        msm_schema_free(s);
        free(text);
        if (g) {
            g->base.cleanup = reg_cleanup;
            fe_call_error(&g->base, 500, "INTERNAL", "out of memory", NULL);
        } else {
            msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        }
        return;
    }
    g->base.cleanup = reg_cleanup;
    g->schema = s;
    g->text = text;
    g->check_only = check_only;
    lookup_start(g);
}

static void post_version(msm_http_req_t *req, void *opaque)
{
    register_or_check(req, opaque, 0);
}

static void post_compatibility(msm_http_req_t *req, void *opaque)
{
    const char *v = msm_http_req_param(req, "version");
    if (strcmp(v, "latest") != 0) {
        respond_error(req, 404, "NOT_FOUND", CE_VERSION_NOT_FOUND,
                      "only compatibility with the latest version is checked");
        return;
    }
    register_or_check(req, opaque, 1);
}

/* ---- reads ---- */

typedef struct {
    fe_call_t base;
    char *subject; /* NULL for /schemas/ids */
    int id;
} read_t;

static void read_cleanup(fe_call_t *c)
{
    free(((read_t *)c)->subject);
}

static read_t *read_new(fe_t *fe, msm_http_req_t *req, const char *subject)
{
    read_t *rd = fe_call_new(fe, req, sizeof(*rd));
    if (rd && subject && !(rd->subject = strdup(subject))) {
        fe_call_end(&rd->base);
        rd = NULL;
    }
    if (!rd)
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
    else
        rd->base.cleanup = read_cleanup;
    return rd;
}

static const char *field_of(const redisReply *r, size_t from, const char *name)
{
    for (size_t i = from; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[i]->str, name) == 0)
            return r->element[i + 1]->str;
    }
    return NULL;
}

/* {"schema","schemaType"[,"messageName"]} from HGETALL pairs starting at @p from. */
static json_t *schema_json(const redisReply *r, size_t from)
{
    const char *text = field_of(r, from, "schema"), *type = field_of(r, from, "type");
    const char *mn = field_of(r, from, "message_name");
    json_t *o = json_pack("{s:s,s:s}", "schema", text ? text : "", "schemaType",
                          type ? type : "AVRO");
    if (o && mn && *mn)
        json_object_set_new(o, "messageName", json_string(mn));
    return o;
}

static void on_id_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        char msg[64];
        snprintf(msg, sizeof(msg), "schema %d not found", rd->id);
        call_error(&rd->base, 404, "NOT_FOUND", CE_SCHEMA_NOT_FOUND, msg);
        return;
    }
    fe_call_json(&rd->base, 200, schema_json(reply, 0));
}

static int parse_positive(const char *s, long long max, long long *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -1;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

static void get_schema_by_id(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    long long id;
    if (parse_positive(msm_http_req_param(req, "id"), 0x7fffffff, &id) != 0) {
        respond_error(req, 404, "NOT_FOUND", CE_SCHEMA_NOT_FOUND, "schema not found");
        return;
    }
    read_t *rd = read_new(fe, req, NULL);
    if (!rd)
        return;
    rd->id = (int)id;
    char k[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, k, sizeof(k), MSM_KEY_SCHEMA, rd->id);
    int rc = msm_redis_command(fe->fe_deps.redis, on_id_read, rd, "HGETALL %s", k);
    if (rc != MSM_OK)
        call_unavailable(&rd->base, msm_err_str(rc));
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void on_subjects(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    const char **names = calloc(n + 1, sizeof(*names));
    json_t *arr = json_array();
    if (!names || !arr) {
        free(names);
        json_decref(arr);
        call_error(&rd->base, 500, "INTERNAL", 50000, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (reply->element[i]->type == REDIS_REPLY_STRING)
            names[k++] = reply->element[i]->str;
    }
    qsort(names, k, sizeof(*names), by_text);
    for (size_t i = 0; i < k; i++)
        json_array_append_new(arr, json_string(names[i]));
    free(names);
    fe_call_json(&rd->base, 200, arr);
}

static void get_subjects(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    read_t *rd = read_new(fe, req, NULL);
    if (!rd)
        return;
    char k[KEY_MAX];
    key(fe, k, "%s", MSM_KEY_SCHEMA_SUBJECTS);
    int rc = msm_redis_command(fe->fe_deps.redis, on_subjects, rd, "SMEMBERS %s", k);
    if (rc != MSM_OK)
        call_unavailable(&rd->base, msm_err_str(rc));
}

static void subject_not_found_call(read_t *rd)
{
    char msg[SUBJECT_MAX + 64];
    snprintf(msg, sizeof(msg), "subject '%s' not found", rd->subject);
    call_error(&rd->base, 404, "NOT_FOUND", CE_SUBJECT_NOT_FOUND, msg);
}

static void on_versions(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    long long n = msm_redis_reply_int(reply, 0);
    if (n <= 0) {
        subject_not_found_call(rd);
        return;
    }
    json_t *arr = json_array();
    for (long long v = 1; arr && v <= n; v++)
        json_array_append_new(arr, json_integer(v));
    fe_call_json(&rd->base, 200, arr);
}

static void get_versions(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *subject = msm_http_req_param(req, "subject");
    if (!subject_valid(subject)) {
        subject_not_found(req, subject);
        return;
    }
    read_t *rd = read_new(fe, req, subject);
    if (!rd)
        return;
    char k[KEY_MAX];
    key(fe, k, MSM_KEY_SCHEMA_VERSIONS, subject);
    int rc = msm_redis_command(fe->fe_deps.redis, on_versions, rd, "LLEN %s", k);
    if (rc != MSM_OK)
        call_unavailable(&rd->base, msm_err_str(rc));
}

static void on_version(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        subject_not_found_call(rd);
        return;
    }
    long long id = msm_redis_reply_int(reply->element[0], 0);
    if (id <= 0 || reply->elements < 2) {
        char msg[SUBJECT_MAX + 64];
        snprintf(msg, sizeof(msg), "version not found in subject '%s'", rd->subject);
        call_error(&rd->base, 404, "NOT_FOUND", CE_VERSION_NOT_FOUND, msg);
        return;
    }
    json_t *o = schema_json(reply, 2);
    if (o) {
        json_object_set_new(o, "subject", json_string(rd->subject));
        json_object_set_new(o, "version", json_integer(msm_redis_reply_int(reply->element[1], 0)));
        json_object_set_new(o, "id", json_integer(id));
    }
    fe_call_json(&rd->base, 200, o);
}

static void get_version(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *subject = msm_http_req_param(req, "subject");
    const char *v = msm_http_req_param(req, "version");
    long long version = -1;
    if (!subject_valid(subject)) {
        subject_not_found(req, subject);
        return;
    }
    if (strcmp(v, "latest") != 0 && strcmp(v, "-1") != 0 &&
        parse_positive(v, 0x7fffffff, &version) != 0) {
        respond_error(req, 400, "INVALID_ARGUMENT", CE_INVALID_VERSION,
                      "version must be a positive integer or \"latest\"");
        return;
    }
    read_t *rd = read_new(fe, req, subject);
    if (!rd)
        return;
    char k[KEY_MAX], prefix[KEY_MAX], ver[24];
    key(fe, k, MSM_KEY_SCHEMA_VERSIONS, subject);
    key(fe, prefix, "%s", MSM_KEY_SCHEMA_ID_PREFIX);
    snprintf(ver, sizeof(ver), "%lld", version);
    const char *argv[] = {k, ver, prefix};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_sr_version, on_version, rd, 1, 3, argv,
                            NULL);
    if (rc != MSM_OK)
        call_unavailable(&rd->base, msm_err_str(rc));
}

/* ---- config ---- */

static void on_config_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    /* HMGET subject, "": the subject's own level, else the global one, else the default. */
    level_t level = LEVEL_DEFAULT;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        if (reply->element[i]->type == REDIS_REPLY_STRING &&
            level_parse(reply->element[i]->str, &level) == MSM_OK)
            break;
    }
    fe_call_json(&rd->base, 200, json_pack("{s:s,s:s}", "compatibility", level_names[level],
                                           "compatibilityLevel", level_names[level]));
}

static void on_config_written(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_t *rd = opaque;
    if (redis_failed(&rd->base, reply, err))
        return;
    fe_call_json(&rd->base, 200, json_pack("{s:s}", "compatibility", level_names[rd->id]));
}

static void config(msm_http_req_t *req, fe_t *fe, const char *subject)
{
    int put = strcmp(msm_http_req_method(req), "PUT") == 0;
    if (subject && !subject_valid(subject)) {
        subject_not_found(req, subject);
        return;
    }
    level_t level = LEVEL_DEFAULT;
    if (put) {
        static const char *const known[] = {"compatibility", "compatibilityLevel", NULL};
        json_t *body;
        if (fe_parse_body(req, 0, &body) != 0)
            return;
        msm_json_err_t e;
        msm_json_err_init(&e);
        const char *name = NULL;
        if (msm_json_expect_object(&e, body) == MSM_OK) {
            msm_json_check_known(&e, body, known);
            msm_json_get_str(&e, body, "compatibilityLevel", MSM_JSON_NULLABLE, &name);
            msm_json_get_str(&e, body, "compatibility", name ? MSM_JSON_NULLABLE
                                                             : MSM_JSON_REQUIRED, &name);
            if (name && level_parse(name, &level) != MSM_OK)
                msm_json_err_add(&e, "compatibility",
                                 "must be BACKWARD, FORWARD, FULL or NONE");
        }
        int bad = msm_json_err_count(&e) > 0;
        if (bad)
            respond_invalid(req, &e, CE_INVALID_LEVEL);
        msm_json_err_deinit(&e);
        json_decref(body);
        if (bad)
            return;
    }
    read_t *rd = read_new(fe, req, NULL);
    if (!rd)
        return;
    rd->id = (int)level;
    char k[KEY_MAX];
    key(fe, k, "%s", MSM_KEY_SCHEMA_CONFIG);
    const char *field = subject ? subject : "";
    int rc = put ? msm_redis_command(fe->fe_deps.redis, on_config_written, rd, "HSET %s %s %s", k,
                                     field, level_names[level])
                 : msm_redis_command(fe->fe_deps.redis, on_config_read, rd, "HMGET %s %s %s", k,
                                     field, "");
    if (rc != MSM_OK)
        call_unavailable(&rd->base, msm_err_str(rc));
}

static void subject_config(msm_http_req_t *req, void *opaque)
{
    config(req, opaque, msm_http_req_param(req, "subject"));
}

static void global_config(msm_http_req_t *req, void *opaque)
{
    config(req, opaque, NULL);
}

int fe_schema_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"POST", "/subjects/{subject}/versions", post_version},
        {"GET", "/subjects", get_subjects},
        {"GET", "/subjects/{subject}/versions", get_versions},
        {"GET", "/subjects/{subject}/versions/{version}", get_version},
        {"GET", "/schemas/ids/{id}", get_schema_by_id},
        {"POST", "/compatibility/subjects/{subject}/versions/{version}", post_compatibility},
        {"GET", "/config/{subject}", subject_config},
        {"PUT", "/config/{subject}", subject_config},
        {"GET", "/config", global_config},
        {"PUT", "/config", global_config},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
