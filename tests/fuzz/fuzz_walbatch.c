/* libFuzzer target: a stream of pgoutput messages (each a 2-byte big-endian
 * length and its bytes) decoded by oc_pgoutput and fed to oc_walbatch,
 * with batches taken along the way. Checks that nothing crashes or leaks,
 * that the open transaction stays bounded by max_txn_keys, and that every
 * batch taken is self-consistent (keys inside its arena, interned models,
 * each (model, key) once). The whole input, as text, is also read as a
 * pg_current_snapshot() against each batch's xids (oc_walb_running): no
 * crash, and a count within the xids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oc_walbatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TXN_KEYS 64

static void check_batch(const oc_walb_batch_t *bt)
{
    for (size_t i = 0; i < bt->nkeys; i++) {
        if (bt->keys[i] < bt->arena ||
            bt->keys[i] + bt->klens[i] >= bt->arena + bt->arena_len ||
            bt->keys[i][bt->klens[i]] != '\0' || bt->models[i] == NULL ||
            bt->models[i][0] == '\0')
            abort();
        for (size_t j = 0; j < i; j++) /* each (model, key) once */
            if (bt->models[j] == bt->models[i] && bt->klens[j] == bt->klens[i] &&
                memcmp(bt->keys[j], bt->keys[i], bt->klens[i]) == 0)
                abort();
    }
    for (size_t i = 0; i < bt->nwhole; i++)
        if (bt->whole[i] == NULL || bt->whole[i][0] == '\0')
            abort();
    if (memchr(bt->caught_up_at, '\0', sizeof(bt->caught_up_at)) == NULL)
        abort();
}

/* The input as a NUL-terminated string (exact size: overreads are caught),
 * read as a snapshot against the batch's xids. */
static void check_running(const oc_walb_batch_t *bt, const uint8_t *data, size_t size)
{
    char *snap = malloc(size + 1);
    if (snap == NULL)
        return;
    memcpy(snap, data, size);
    snap[size] = '\0';
    long n = oc_walb_running(snap, bt->xids, bt->nxids);
    if (n < -1 || (n >= 0 && (size_t)n > bt->nxids))
        abort();
    free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oc_walb_t *b = oc_walb_new(MAX_TXN_KEYS);
    if (b == NULL)
        return 0;
    /* relids the seeds use: 1..4 and the captured stream's */
    oc_walb_map_add(b, 1, "A", "id");
    oc_walb_map_add(b, 2, "B", "slug");
    oc_walb_map_add(b, 2, "A", "slug");
    oc_walb_map_add(b, 3, NULL, NULL);
    oc_walb_map_add(b, 16424, "User", "id");
    /* the seeds' heartbeats carry it ("<token> <instant>") */
    oc_walb_set_token(b, "0123456789abcdef0123456789abcdef");
    char err[OC_ERRLEN];
    size_t off = 0;
    while (off + 2 <= size) {
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        uint8_t *msg = malloc(len ? len : 1); /* exact size: overreads are caught */
        if (msg == NULL)
            break;
        if (len)
            memcpy(msg, data + off, len);
        off += len;
        oc_pgo_msg_t m;
        if (oc_pgo_decode(msg, len, &m, err) == OC_OK) {
            oc_walb_res_t r = oc_walb_feed(b, &m, err);
            if (r != OC_WALB_OK && memchr(err, '\0', sizeof(err)) == NULL)
                abort();
            if (r == OC_WALB_RELOAD)
                oc_walb_restart(b);
        }
        free(msg);
        /* the open transaction's keys are bounded (the committed part is
         * taken below whenever there is one) */
        if (oc_walb_pending_keys(b) > 2 * MAX_TXN_KEYS + 16 && !oc_walb_ready(b))
            abort();
        if (oc_walb_ready(b) && (len & 1)) {
            oc_walb_batch_t bt;
            if (oc_walb_take(b, &bt) == OC_OK) {
                check_batch(&bt);
                oc_walb_batch_free(&bt);
            }
        }
    }
    oc_walb_batch_t bt;
    if (oc_walb_take(b, &bt) == OC_OK) {
        check_batch(&bt);
        check_running(&bt, data, size);
        oc_walb_batch_free(&bt);
    }
    oc_walb_free(b);
    return 0;
}
