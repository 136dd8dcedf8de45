/* SPDX-License-Identifier: MIT */
/* CDC (API.md "CDC", docs/cdc.md): a source as the registry stores it, the changes a source
 * pushes or a range answer carries, and how one change becomes an event. The frontend's push
 * and the scheduler's pull both turn changes into envelopes here, so a change is the same
 * event whichever path brings it. The per-partition state both paths share (cursor, lock,
 * intent) is msm/cdc_state.h. */
#ifndef MSM_CDC_H
#define MSM_CDC_H

#include "msm/envelope.h"
#include "msm/json.h"
#include "msm/schema.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/** The registry hash of sources (name → source JSON), beside topics and subscriptions. */
#define MSM_KEY_CDC_SOURCES "{registry}:cdc:sources"

#define MSM_CDC_PARTITIONS_MAX  1024 /**< partitions of one source */
#define MSM_CDC_POLL_MIN_MS     10   /**< poll_interval_ms bounds */
#define MSM_CDC_POLL_MAX_MS     3600000
#define MSM_CDC_POLL_DEFAULT_MS 1000
#define MSM_CDC_BATCH_MAX       10000 /**< batch_size bounds: changes per range request */
#define MSM_CDC_BATCH_DEFAULT   500
#define MSM_CDC_ENTITY_MAX      1024 /**< bytes of an entity (it is the event's key) */
#define MSM_CDC_URL_MAX         2048

/** A source (PUT /v1/cdc/sources/{name}). */
typedef struct {
    char *name;
    char *topic;
    char *range_url;   /**< NULL: push only (no pull) */
    char **partitions; /**< npartitions unique names */
    size_t npartitions;
    int poll_interval_ms; /**< idle pull: next range request after this */
    int batch_size;       /**< limit of each range request */
} msm_cdc_source_t;

/**
 * @brief Validates a PUT body (or a stored source) into a source named @p name; errors go to
 * @p e with their field paths. Defaults: poll_interval_ms 1000, batch_size 500.
 * @returns NULL when invalid (or out of memory: an error at "$").
 */
msm_cdc_source_t *msm_cdc_source_from_json(const char *name, const json_t *body, msm_json_err_t *e);
/** @brief The stored and public JSON of @p s (a new reference, NULL when out of memory). */
json_t *msm_cdc_source_to_json(const msm_cdc_source_t *s);
void msm_cdc_source_free(msm_cdc_source_t *s);
/** @brief Non-zero when @p partition is one of the source's partitions. */
int msm_cdc_source_has_partition(const msm_cdc_source_t *s, const char *partition);

/** One change, borrowed from its JSON ({"sequence","op","entity","data"}). */
typedef struct {
    int64_t sequence;
    Msm__V1__Operation op;
    const char *entity;
    const json_t *data; /**< NULL: none (only a delete may leave it out) */
} msm_cdc_change_t;

/**
 * @brief Checks the array @p changes at @p e's current path (the caller pushes its name):
 * every element an object with only the fields above, sequence >= 1 and greater than the
 * one before, op create|update|delete, entity a non-empty text of at most
 * MSM_CDC_ENTITY_MAX bytes (an error in @p big when longer) without control characters,
 * data present unless op is delete. Both a push body and a range answer are checked here.
 */
void msm_cdc_changes_check(const json_t *changes, msm_json_err_t *e, msm_json_err_t *big);

/** @brief The change @p c (checked by msm_cdc_changes_check()) as a view into it. */
void msm_cdc_change_get(const json_t *c, msm_cdc_change_t *out);

/** A change's payload. */
typedef struct {
    uint8_t *data; /**< malloc'd, owned by the caller */
    size_t len;
    const char *content_type; /**< static text */
    int32_t schema_id;        /**< 0: not bound to a schema */
} msm_cdc_payload_t;

/**
 * @brief The payload of change @p c: a delete without data is a tombstone (the payload
 * `null`, never checked against a schema); otherwise its data, encoded by @p schema when
 * the topic is bound to one (@p schema_id its global id: validated and converted to the
 * schema's wire form) or as compact JSON text. Errors at @p e's current path (the caller
 * pushes the change's "data"); a payload over @p limit bytes is an error in @p big.
 * @returns MSM_OK (@p out filled), MSM_ERR_INVALID or MSM_ERR_NOMEM (@p out untouched).
 */
int msm_cdc_payload(const msm_cdc_change_t *c,
                    const msm_schema_t *schema,
                    int32_t schema_id,
                    size_t limit,
                    msm_cdc_payload_t *out,
                    msm_json_err_t *e,
                    msm_json_err_t *big);

/**
 * @brief The CDC part of an event: key and ordering key = the entity (one entity's changes
 * stay in order in one partition of the topic's log), cdc_source, cdc_partition,
 * cdc_sequence, cdc_operation, cdc_entity. Pointers are borrowed from the arguments.
 */
void msm_cdc_envelope(Msm__V1__Event *env,
                      const char *source,
                      const char *partition,
                      const msm_cdc_change_t *c);

#endif
