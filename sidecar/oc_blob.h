/*
 * oc_blob: an immutable, reference-counted byte string (a cached object's
 * JSON) shared by the fills, requests and caches that hold it.
 *
 * Contract: oc_blob_new copies the bytes and returns a blob with one
 * reference (NULL if out of memory); every oc_blob_ref is matched by one
 * oc_blob_unref, and the last unref frees. data is NUL-terminated for
 * convenience (the NUL is not counted in len). Loop thread only: the count
 * is not atomic.
 */
#ifndef OC_BLOB_H
#define OC_BLOB_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct oc_blob {
    uint32_t refs;
    size_t len;
    char data[];
} oc_blob_t;

static inline oc_blob_t *oc_blob_new(const char *data, size_t len)
{
    oc_blob_t *b = malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    if (len)
        memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

static inline oc_blob_t *oc_blob_ref(oc_blob_t *b)
{
    if (b)
        b->refs++;
    return b;
}

static inline void oc_blob_unref(oc_blob_t *b)
{
    if (b && --b->refs == 0)
        free(b);
}

#endif
