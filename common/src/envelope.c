/* SPDX-License-Identifier: MIT */
/* Envelope helpers over the protoc-c generated code. */
#include "msm/envelope.h"

#include "msm/base64.h"
#include "msm/err.h"
#include "msm/id.h"
#include "msm/json.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int msm_lifecycle_pack(const char *topic, const char *subscription, const char *type,
                       const json_t *body, msm_buf_t *out)
{
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (!payload)
        return MSM_ERR_NOMEM;
    char id[MSM_ID_STR_SIZE];
    msm_id_new_str(id);
    Msm__V1__Event__AttributesEntry a_type = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT,
                                    a_sub = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    a_type.key = "type";
    a_type.value = (char *)type;
    a_sub.key = "subscription";
    a_sub.value = (char *)subscription;
    Msm__V1__Event__AttributesEntry *attrs[] = {&a_type, &a_sub};
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    ev.id = id;
    ev.topic = (char *)topic;
    ev.key = (char *)subscription;
    ev.n_attributes = 2;
    ev.attributes = attrs;
    ev.payload.data = (uint8_t *)payload;
    ev.payload.len = strlen(payload);
    ev.content_type = "application/json";
    ev.publish_time_ms = msm_time_unix_ms();
    ev.priority = 5;
    int rc = msm_pb_pack(&ev.base, out);
    free(payload);
    return rc;
}

int msm_pb_pack(const ProtobufCMessage *msg, msm_buf_t *out)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    out->len = 0;
    /* One spare byte so an empty message still gets storage. */
    if (msm_buf_reserve(out, n + 1) != MSM_OK)
        return MSM_ERR_NOMEM;
    out->len = protobuf_c_message_pack(msg, out->data);
    return MSM_OK;
}

Msm__V1__Event *msm_event_unpack(const void *data, size_t len)
{
    return msm__v1__event__unpack(NULL, len, data);
}

void msm_event_free(Msm__V1__Event *ev)
{
    if (ev)
        msm__v1__event__free_unpacked(ev, NULL);
}

Msm__V1__Task *msm_task_unpack(const void *data, size_t len)
{
    return msm__v1__task__unpack(NULL, len, data);
}

void msm_task_free(Msm__V1__Task *task)
{
    if (task)
        msm__v1__task__free_unpacked(task, NULL);
}

Msm__V1__DeliveryOutcome *msm_outcome_unpack(const void *data, size_t len)
{
    return msm__v1__delivery_outcome__unpack(NULL, len, data);
}

void msm_outcome_free(Msm__V1__DeliveryOutcome *outcome)
{
    if (outcome)
        msm__v1__delivery_outcome__free_unpacked(outcome, NULL);
}

Msm__V1__TaskBatch *msm_task_batch_unpack(const void *data, size_t len)
{
    return msm__v1__task_batch__unpack(NULL, len, data);
}

void msm_task_batch_free(Msm__V1__TaskBatch *b)
{
    if (b)
        msm__v1__task_batch__free_unpacked(b, NULL);
}

Msm__V1__OutcomeBatch *msm_outcome_batch_unpack(const void *data, size_t len)
{
    return msm__v1__outcome_batch__unpack(NULL, len, data);
}

void msm_outcome_batch_free(Msm__V1__OutcomeBatch *b)
{
    if (b)
        msm__v1__outcome_batch__free_unpacked(b, NULL);
}

/* The unpacked form is a few times the packed one: one first chunk holds the usual record. */
#define UNPACK_CHUNK(len) ((len)*4 + 4096)

static void *arena_alloc(void *opaque, size_t size)
{
    msm_arena_t **arena = opaque;
    return msm_arena_alloc(arena, size, 4096);
}

static void arena_free_one(void *opaque, void *p)
{
    (void)opaque;
    (void)p; /* freed with the whole arena */
}

Msm__V1__Event *msm_event_unpack_in(msm_arena_t **arena, const void *data, size_t len)
{
    ProtobufCAllocator a = {arena_alloc, arena_free_one, arena};
    return msm__v1__event__unpack(&a, len, data);
}

Msm__V1__TaskBatch *msm_task_batch_unpack_in(msm_arena_t **arena, const void *data, size_t len)
{
    ProtobufCAllocator a = {arena_alloc, arena_free_one, arena};
    if (!*arena && !msm_arena_alloc(arena, 0, UNPACK_CHUNK(len)))
        return NULL;
    return msm__v1__task_batch__unpack(&a, len, data);
}

Msm__V1__OutcomeBatch *
msm_outcome_batch_unpack_in(msm_arena_t **arena, const void *data, size_t len)
{
    ProtobufCAllocator a = {arena_alloc, arena_free_one, arena};
    if (!*arena && !msm_arena_alloc(arena, 0, UNPACK_CHUNK(len)))
        return NULL;
    return msm__v1__outcome_batch__unpack(&a, len, data);
}

const char *msm_event_attr(const Msm__V1__Event *ev, const char *name)
{
    for (size_t i = 0; i < ev->n_attributes; i++) {
        if (strcmp(ev->attributes[i]->key, name) == 0)
            return ev->attributes[i]->value;
    }
    return NULL;
}

static void set_time(json_t *obj, const char *field, int64_t unix_ms)
{
    if (unix_ms <= 0)
        return;
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char buf[40];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(unix_ms % 1000));
    json_object_set_new(obj, field, json_string(buf));
}

static void set_str(json_t *obj, const char *field, const char *value)
{
    if (value && *value)
        json_object_set_new(obj, field, json_string(value));
}

static json_t *payload_json(const Msm__V1__Event *ev)
{
    if (!msm_json_media_type(ev->content_type))
        return NULL;
    return json_loadb((const char *)ev->payload.data, ev->payload.len,
                      JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

json_t *msm_event_to_json(const Msm__V1__Event *ev)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    set_str(o, "id", ev->id);
    set_str(o, "topic", ev->topic);
    set_str(o, "key", ev->key);
    set_str(o, "ordering_key", ev->ordering_key);
    json_t *attrs = json_object();
    for (size_t i = 0; i < ev->n_attributes; i++)
        json_object_set_new(attrs, ev->attributes[i]->key,
                            json_string(ev->attributes[i]->value));
    json_object_set_new(o, "attributes", attrs);
    set_str(o, "content_type", ev->content_type);
    if (ev->schema_id)
        json_object_set_new(o, "schema_id", json_integer(ev->schema_id));
    set_time(o, "publish_time", ev->publish_time_ms);
    set_time(o, "deliver_at", ev->deliver_at_ms);
    set_time(o, "deadline", ev->deadline_ms);
    json_object_set_new(o, "priority", json_integer(ev->priority));
    set_str(o, "idempotency_key", ev->idempotency_key);
    set_str(o, "traceparent", ev->traceparent);
    if (ev->cdc_source && *ev->cdc_source) {
        set_str(o, "cdc_source", ev->cdc_source);
        set_str(o, "cdc_partition", ev->cdc_partition);
        json_object_set_new(o, "cdc_sequence", json_integer(ev->cdc_sequence));
        set_str(o, "cdc_operation", msm_operation_name(ev->cdc_operation));
        set_str(o, "cdc_entity", ev->cdc_entity);
    }
    json_t *data = payload_json(ev);
    if (data) {
        json_object_set_new(o, "data", data);
    } else {
        char *b64 = malloc(msm_base64_encoded_size(ev->payload.len));
        if (b64) {
            msm_base64_encode(ev->payload.data, ev->payload.len, b64);
            json_object_set_new(o, "data_base64", json_string(b64));
            free(b64);
        }
    }
    return o;
}

static const char *const state_names[] = {
    [MSM__V1__TASK_STATE__TASK_STATE_UNSPECIFIED] = "unspecified",
    [MSM__V1__TASK_STATE__TASK_STATE_PENDING] = "pending",
    [MSM__V1__TASK_STATE__TASK_STATE_DELAYED] = "delayed",
    [MSM__V1__TASK_STATE__TASK_STATE_RUNNING] = "running",
    [MSM__V1__TASK_STATE__TASK_STATE_RETRYING] = "retrying",
    [MSM__V1__TASK_STATE__TASK_STATE_SUCCEEDED] = "succeeded",
    [MSM__V1__TASK_STATE__TASK_STATE_DEAD] = "dead",
};

const char *msm_task_state_name(Msm__V1__TaskState state)
{
    if ((unsigned)state >= sizeof(state_names) / sizeof(state_names[0]))
        return "unspecified";
    return state_names[state];
}

int msm_task_state_parse(const char *name, Msm__V1__TaskState *state)
{
    for (unsigned i = 1; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *state = (Msm__V1__TaskState)i;
            return MSM_OK;
        }
    }
    return MSM_ERR_INVALID;
}

static const char *const op_names[] = {
    [MSM__V1__OPERATION__OPERATION_UNSPECIFIED] = "",
    [MSM__V1__OPERATION__OPERATION_CREATE] = "create",
    [MSM__V1__OPERATION__OPERATION_UPDATE] = "update",
    [MSM__V1__OPERATION__OPERATION_DELETE] = "delete",
};

const char *msm_operation_name(Msm__V1__Operation op)
{
    if ((unsigned)op >= sizeof(op_names) / sizeof(op_names[0]))
        return "";
    return op_names[op];
}

int msm_operation_parse(const char *name, Msm__V1__Operation *op)
{
    for (unsigned i = 1; i < sizeof(op_names) / sizeof(op_names[0]); i++) {
        if (strcmp(name, op_names[i]) == 0) {
            *op = (Msm__V1__Operation)i;
            return MSM_OK;
        }
    }
    return MSM_ERR_INVALID;
}
