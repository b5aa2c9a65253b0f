/*
 * oc_result: the typed outcomes that the read path (oc_req) and the write
 * path (oc_write) hand to whoever answers the client (oc_conn, through
 * oc_reply). No module reads another's reply text back: they pass these.
 *
 * Contract: plain data. Pointers inside a result (keys, values, err) are
 * borrowed from the module that produced it and stay valid until that
 * module's object is freed (oc_req_free) or, for writes, for the duration
 * of the done callback.
 */
#ifndef OC_RESULT_H
#define OC_RESULT_H

#include <stddef.h>
#include <stdint.h>

/* One key of a get, as the client asked it (duplicates included). */
typedef enum oc_get_state {
    OC_GET_PENDING,   /* not resolved yet */
    OC_GET_FOUND,     /* data/len hold the object's JSON */
    OC_GET_ABSENT,    /* no such object */
    OC_GET_ERROR,     /* the load failed: the whole command fails */
    OC_GET_TOO_LARGE, /* found, but the values the request read from memcached
                         passed max_reply before it: the command fails with
                         "reply too large" (a binary get: this one) */
} oc_get_state_t;

typedef struct oc_get_item {
    const char *key; /* as the client wrote it (the reply echoes it) */
    size_t klen;
    oc_get_state_t state;
    const char *data;
    size_t len;
    uint64_t cas;  /* memcached's cas when the value came from there, else 0 */
    int from_near; /* answered from this sidecar's near-cache */
} oc_get_item_t;

typedef struct oc_get_result {
    size_t n;
    const oc_get_item_t *items;
    const char *err;    /* the first error, when any item is OC_GET_ERROR */
    uint64_t max_reply; /* the limit OC_GET_TOO_LARGE items passed */
} oc_get_result_t;

typedef enum oc_write_outcome {
    OC_WRITE_STORED,     /* a push was written */
    OC_WRITE_DELETED,    /* a tombstone was written */
    OC_WRITE_NOT_STORED, /* a push lost to a newer object or a tombstone */
    OC_WRITE_FAILED,     /* memcached failed: err says why */
} oc_write_outcome_t;

#endif
