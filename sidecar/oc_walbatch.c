#include "oc_walbatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct walb_rel {
    uint32_t relid;
    const char *model; /* interned; NULL: published, no model's */
    char *key_column;
    int key_idx;   /* from the Relation message; -1 until one came, KEY_LOST */
    int key_named; /* ... and the key is in the replica identity: an UPDATE
                      that changes it sends the old one */
} walb_rel_t;

/* The last Relation message of a model's relation had no column of the
 * map's name (renamed since the map was read, or before: the stream may
 * describe the table as it was): its changes make the model whole until a
 * Relation message names the column again, and the map is read again once
 * the transaction is confirmed. Reloading at once would restart from the
 * confirmed position, before the rename, and meet the same message again. */
#define KEY_LOST (-2)

struct oc_walb {
    size_t max_txn_keys;
    walb_rel_t *rels;
    size_t nrels, rels_cap;
    char **interned; /* model names, for the accumulator's life */
    size_t ninterned;
    /* Keys: the committed part, then the open transaction's. */
    const char **models;
    size_t *koff, *klen;
    size_t nkeys, ncommitted;
    /* one capacity per array: a failed grow leaves the others truthful */
    size_t models_cap, koff_cap, klen_cap;
    char *arena;
    size_t alen, acap, acommitted;
    const char **whole; /* committed whole models (distinct) */
    size_t nwhole, whole_cap;
    uint64_t end_lsn;
    int64_t commit_ts, first_commit_ts;
    char caught_up_at[OC_WALB_INSTANT_MAX];
    size_t ntxn;
    uint32_t *xids; /* of the committed transactions that touched a model */
    size_t nxids, xids_cap;
    /* The open transaction. */
    int in_txn;
    uint32_t xid;
    int overflow;         /* over max_txn_keys: its models go whole */
    const char **touched; /* models it touched, or made whole (distinct) */
    size_t ntouched, touched_cap;
    unsigned char *touched_whole; /* [touched_cap]: this model goes whole */
    char txn_hb[OC_WALB_INSTANT_MAX];
    char token[OC_WALB_TOKEN_LEN + 1]; /* of our heartbeats; "": none set */
    uint32_t unknown; /* the relation of the last RELOAD not in the map */
    int txn_remap;    /* the open transaction says the map is out of date */
    int remap;        /* ... and it committed: see oc_walb_remap */
};

/* ---- small vectors ------------------------------------------------------------ */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* After a large batch its arrays would stay that large for the process's
 * life (76 MB after one 1,000,000-key UPDATE): once they are over twice
 * what the keys left need, they go back to that (never under `floor`
 * elements, so that batches under it never realloc). A failed realloc
 * keeps the larger block, which is still right. */
static void shrink(void **p, size_t *cap, size_t keep, size_t floor, size_t elem)
{
    size_t c = floor;
    while (c < keep)
        c *= 2;
    if (*cap <= 2 * c)
        return;
    void *q = realloc(*p, c * elem);
    if (q == NULL)
        return;
    *p = q;
    *cap = c;
}

#define SHRINK_FLOOR_KEYS  4096u
#define SHRINK_FLOOR_BYTES (256u * 1024u)

static void shrink_all(oc_walb_t *b)
{
    shrink((void **)&b->models, &b->models_cap, b->nkeys, SHRINK_FLOOR_KEYS,
           sizeof(*b->models));
    shrink((void **)&b->koff, &b->koff_cap, b->nkeys, SHRINK_FLOOR_KEYS,
           sizeof(*b->koff));
    shrink((void **)&b->klen, &b->klen_cap, b->nkeys, SHRINK_FLOOR_KEYS,
           sizeof(*b->klen));
    shrink((void **)&b->arena, &b->acap, b->alen, SHRINK_FLOOR_BYTES, 1);
    shrink((void **)&b->xids, &b->xids_cap, b->nxids, SHRINK_FLOOR_KEYS,
           sizeof(*b->xids));
}

size_t oc_walb_bytes(const oc_walb_t *b)
{
    return b->models_cap * sizeof(*b->models) + b->koff_cap * sizeof(*b->koff) +
           b->klen_cap * sizeof(*b->klen) + b->acap + b->whole_cap * sizeof(*b->whole) +
           b->rels_cap * sizeof(*b->rels) + b->touched_cap * (sizeof(*b->touched) + 1) +
           b->xids_cap * sizeof(*b->xids);
}

static const char *intern(oc_walb_t *b, const char *name)
{
    for (size_t i = 0; i < b->ninterned; i++)
        if (strcmp(b->interned[i], name) == 0)
            return b->interned[i];
    char **v = realloc(b->interned, (b->ninterned + 1) * sizeof(*v));
    if (v == NULL)
        return NULL;
    b->interned = v;
    if ((v[b->ninterned] = strdup(name)) == NULL)
        return NULL;
    return v[b->ninterned++];
}

/* ---- the map ---------------------------------------------------------------------- */

oc_walb_t *oc_walb_new(size_t max_txn_keys)
{
    oc_walb_t *b = calloc(1, sizeof(*b));
    if (b)
        oc_walb_set_max_txn_keys(b, max_txn_keys);
    return b;
}

void oc_walb_set_max_txn_keys(oc_walb_t *b, size_t max_txn_keys)
{
    b->max_txn_keys = max_txn_keys ? max_txn_keys : 1;
}

void oc_walb_map_clear(oc_walb_t *b)
{
    for (size_t i = 0; i < b->nrels; i++)
        free(b->rels[i].key_column);
    b->nrels = 0;
    b->remap = b->txn_remap = 0;
}

oc_status_t oc_walb_map_add(oc_walb_t *b, uint32_t relid, const char *model,
                            const char *key_column)
{
    if (grow((void **)&b->rels, &b->rels_cap, b->nrels + 1, sizeof(*b->rels)) != 0)
        return OC_ENOMEM;
    walb_rel_t *r = &b->rels[b->nrels];
    *r = (walb_rel_t){.relid = relid, .key_idx = -1};
    if (model && ((r->model = intern(b, model)) == NULL ||
                  (r->key_column = strdup(key_column ? key_column : "")) == NULL))
        return OC_ENOMEM;
    b->nrels++;
    return OC_OK;
}

void oc_walb_free(oc_walb_t *b)
{
    if (b == NULL)
        return;
    oc_walb_map_clear(b);
    free(b->rels);
    for (size_t i = 0; i < b->ninterned; i++)
        free(b->interned[i]);
    free(b->interned);
    free(b->models);
    free(b->koff);
    free(b->klen);
    free(b->arena);
    free(b->whole);
    free(b->touched);
    free(b->touched_whole);
    free(b->xids);
    free(b);
}

/* ---- the open transaction -------------------------------------------------------- */

static void txn_open(oc_walb_t *b, uint32_t xid)
{
    b->xid = xid;
    b->nkeys = b->ncommitted; /* drop what an unfinished one left */
    b->alen = b->acommitted;
    b->in_txn = 1;
    b->overflow = 0;
    b->ntouched = 0;
    b->txn_hb[0] = '\0';
}

/* Model m was touched by the open transaction (whole: it goes whole). */
static int touch(oc_walb_t *b, const char *m, int whole)
{
    for (size_t i = 0; i < b->ntouched; i++)
        if (b->touched[i] == m) {
            b->touched_whole[i] |= (unsigned char)whole;
            return 0;
        }
    /* touched_whole first, on a copy of the capacity: touched_cap grows only
     * once both have (the other order left it claiming room that
     * touched_whole lacked when its realloc failed) */
    size_t cap = b->touched_cap;
    if (grow((void **)&b->touched_whole, &cap, b->ntouched + 1, 1) != 0 ||
        grow((void **)&b->touched, &b->touched_cap, b->ntouched + 1,
             sizeof(*b->touched)) != 0)
        return -1;
    b->touched[b->ntouched] = m;
    b->touched_whole[b->ntouched++] = (unsigned char)whole;
    return 0;
}

static int add_key(oc_walb_t *b, const char *m, const char *k, size_t len)
{
    if (touch(b, m, 0) != 0)
        return -1;
    if (b->overflow)
        return 0;
    if (b->nkeys - b->ncommitted >= b->max_txn_keys) {
        /* Too big to list: every model it touched goes whole instead. */
        b->overflow = 1;
        b->nkeys = b->ncommitted;
        b->alen = b->acommitted;
        return 0;
    }
    if (grow((void **)&b->models, &b->models_cap, b->nkeys + 1, sizeof(*b->models)) !=
            0 ||
        grow((void **)&b->koff, &b->koff_cap, b->nkeys + 1, sizeof(*b->koff)) != 0 ||
        grow((void **)&b->klen, &b->klen_cap, b->nkeys + 1, sizeof(*b->klen)) != 0 ||
        grow((void **)&b->arena, &b->acap, b->alen + len + 1, 1) != 0)
        return -1;
    memcpy(b->arena + b->alen, k, len);
    b->arena[b->alen + len] = '\0';
    b->models[b->nkeys] = m;
    b->koff[b->nkeys] = b->alen;
    b->klen[b->nkeys++] = len;
    b->alen += len + 1;
    return 0;
}

static int add_whole(oc_walb_t *b, const char *m)
{
    for (size_t i = 0; i < b->nwhole; i++)
        if (b->whole[i] == m)
            return 0;
    if (grow((void **)&b->whole, &b->whole_cap, b->nwhole + 1, sizeof(*b->whole)) != 0)
        return -1;
    b->whole[b->nwhole++] = m;
    return 0;
}

static oc_walb_res_t txn_commit(oc_walb_t *b, const oc_pgo_msg_t *m, char *err)
{
    for (size_t i = 0; i < b->ntouched; i++)
        if ((b->overflow || b->touched_whole[i]) && add_whole(b, b->touched[i]) != 0)
            return oc_fail(err, OC_ENOMEM, "out of memory"), OC_WALB_BAD;
    /* Its xid, for the visibility wait (oc_walb_batch_t.xids): only one that
     * touched a model has deletes to wait for. */
    if (b->ntouched > 0) {
        if (grow((void **)&b->xids, &b->xids_cap, b->nxids + 1, sizeof(*b->xids)) != 0)
            return oc_fail(err, OC_ENOMEM, "out of memory"), OC_WALB_BAD;
        b->xids[b->nxids++] = b->xid;
    }
    b->ncommitted = b->nkeys;
    b->acommitted = b->alen;
    b->end_lsn = m->commit.end_lsn;
    if (m->commit.commit_ts > b->commit_ts)
        b->commit_ts = m->commit.commit_ts;
    if (b->first_commit_ts == 0 || m->commit.commit_ts < b->first_commit_ts)
        b->first_commit_ts = m->commit.commit_ts;
    if (b->txn_hb[0])
        memcpy(b->caught_up_at, b->txn_hb, sizeof(b->caught_up_at));
    b->ntxn++;
    b->in_txn = 0;
    b->remap |= b->txn_remap;
    b->txn_remap = 0;
    return OC_WALB_OK;
}

/* ---- messages -----------------------------------------------------------------------
 */

/* A Relation: where each of its models' key column is. */
static oc_walb_res_t relation(oc_walb_t *b, const oc_pgo_msg_t *m)
{
    int known = 0;
    for (size_t i = 0; i < b->nrels; i++) {
        walb_rel_t *r = &b->rels[i];
        if (r->relid != m->rel.relid)
            continue;
        known = 1;
        if (r->model == NULL)
            continue;
        r->key_idx = -1;
        r->key_named = 0;
        oc_pgo_iter_t it = oc_pgo_relcols_iter(&m->rel.cols);
        oc_pgo_relcol_t col;
        for (int idx = 0; oc_pgo_relcol_next(&it, &col) == OC_OK; idx++)
            if (strcmp(col.name, r->key_column) == 0) {
                r->key_idx = idx;
                r->key_named = (col.flags & OC_PGO_RELCOL_KEY) != 0;
            }
        if (r->key_idx < 0) {
            r->key_idx = KEY_LOST;
            /* an empty name: the map says the key column was dropped, and
             * reading the map again would not find it either */
            b->txn_remap |= r->key_column[0] != '\0';
        }
    }
    /* A relation not in the map is not a reason to reload by itself:
     * PostgreSQL describes a partition too before its changes, which come
     * as the root's (publish_via_partition_root). A change of a relation
     * not in the map is. */
    (void)known;
    return OC_WALB_OK;
}

/* The key column of a tuple, for model r. 1: a key; 0: no key to take (a
 * NULL key: nothing cached); -1: it cannot be read (the model goes whole). */
static int tuple_key(const walb_rel_t *r, const oc_pgo_tuple_t *t, oc_pgo_col_t *col)
{
    if (r->key_idx < 0 || r->key_idx >= t->ncols ||
        oc_pgo_tuple_col(t, (uint16_t)r->key_idx, col) != OC_OK)
        return -1;
    if (col->kind == OC_PGO_COL_NULL)
        return 0;
    return col->kind == OC_PGO_COL_TEXT ? 1 : -1;
}

static int take_key(oc_walb_t *b, const walb_rel_t *r, const oc_pgo_tuple_t *t, int must)
{
    oc_pgo_col_t col;
    int k = tuple_key(r, t, &col);
    if (k > 0)
        return add_key(b, r->model, col.p, col.len);
    /* A DELETE's old key that is NULL in a 'K' tuple means the key is not in
     * the replica identity: it cannot be named; nor can an unreadable one.
     * (In an 'O' tuple, REPLICA IDENTITY FULL, a NULL is the row's own: the
     * caller does not ask.) */
    if (k < 0 || must)
        return touch(b, r->model, 1);
    return 0;
}

/* An UPDATE whose new key is 'u' (unchanged, stored out of line: pgoutput
 * sends no value) and whose old tuple names the key: the key is the old one,
 * which the old tuple gives. PostgreSQL 15 sends the old key then even under
 * REPLICA IDENTITY DEFAULT (an out-of-line identity column is logged), the
 * whole row under FULL. Without this, every update of such a row made its
 * model whole. */
static int new_key_is_the_old(const walb_rel_t *r, const oc_pgo_msg_t *m)
{
    oc_pgo_col_t col;
    if (m->type != OC_PGO_UPDATE || m->change.old_kind == 0 || r->key_idx < 0 ||
        r->key_idx >= m->change.new_tuple.ncols ||
        oc_pgo_tuple_col(&m->change.new_tuple, (uint16_t)r->key_idx, &col) != OC_OK ||
        col.kind != OC_PGO_COL_UNCHANGED)
        return 0;
    return tuple_key(r, &m->change.old_tuple, &col) > 0;
}

static oc_walb_res_t change(oc_walb_t *b, const oc_pgo_msg_t *m, char *err)
{
    if (!b->in_txn)
        return oc_fail(err, OC_EINVAL, "a change outside a transaction"), OC_WALB_BAD;
    int known = 0;
    for (size_t i = 0; i < b->nrels; i++) {
        const walb_rel_t *r = &b->rels[i];
        if (r->relid != m->change.relid)
            continue;
        known = 1;
        if (r->model == NULL)
            continue;
        if (r->key_idx == -1) {
            oc_fail(err, OC_EINVAL, "a change of relation %u before its Relation message",
                    r->relid);
            return OC_WALB_RELOAD;
        }
        int rc = 0;
        /* The replica identity changed since the attach checked it (the key
         * is not in it): an UPDATE may have changed the key without saying
         * what it was, unless the whole old row came. */
        if (m->type == OC_PGO_UPDATE && !r->key_named && m->change.old_kind != 'O')
            rc |= touch(b, r->model, 1);
        if (m->type != OC_PGO_DELETE && !new_key_is_the_old(r, m))
            rc |= take_key(b, r, &m->change.new_tuple, 0);
        if (m->change.old_kind != 0)
            rc |= take_key(b, r, &m->change.old_tuple,
                           m->type == OC_PGO_DELETE && m->change.old_kind == 'K');
        else if (m->type == OC_PGO_DELETE)
            rc |= touch(b, r->model, 1); /* no old key at all: whole */
        if (rc != 0)
            return oc_fail(err, OC_ENOMEM, "out of memory"), OC_WALB_BAD;
    }
    if (!known) {
        oc_fail(err, OC_EINVAL, "a change of relation %u, not in the map",
                m->change.relid);
        b->unknown = m->change.relid;
        return OC_WALB_RELOAD;
    }
    return OC_WALB_OK;
}

static oc_walb_res_t truncate(oc_walb_t *b, const oc_pgo_msg_t *m, char *err)
{
    if (!b->in_txn)
        return oc_fail(err, OC_EINVAL, "a truncate outside a transaction"), OC_WALB_BAD;
    for (uint32_t k = 0; k < m->truncate.nrels; k++) {
        uint32_t relid = oc_pgo_truncate_relid(m, k);
        int known = 0;
        for (size_t i = 0; i < b->nrels; i++) {
            if (b->rels[i].relid != relid)
                continue;
            known = 1;
            if (b->rels[i].model && touch(b, b->rels[i].model, 1) != 0)
                return oc_fail(err, OC_ENOMEM, "out of memory"), OC_WALB_BAD;
        }
        if (!known) {
            oc_fail(err, OC_EINVAL, "a truncate of relation %u, not in the map", relid);
            b->unknown = relid;
            return OC_WALB_RELOAD;
        }
    }
    return OC_WALB_OK;
}

static int is_prefix(const oc_pgo_msg_t *m, const char *prefix)
{
    size_t plen = strlen(prefix);
    return m->message.prefix_len == plen && memcmp(m->message.prefix, prefix, plen) == 0;
}

/* The instant of our own heartbeat ("<token> <instant>"), or NULL: a
 * message of another prefix, another token (any role may write one: an
 * instant of its choosing would claim that writes the stream has not
 * reached yet were applied), or not an instant. */
static const char *heartbeat_instant(const oc_walb_t *b, const oc_pgo_msg_t *m,
                                     size_t *len)
{
    const char *c = m->message.content;
    size_t n = m->message.content_len, tl = OC_WALB_TOKEN_LEN;
    if (!is_prefix(m, OC_WALB_HEARTBEAT_PREFIX) || b->token[0] == '\0' || n <= tl + 1 ||
        n - tl - 1 >= OC_WALB_INSTANT_MAX || memcmp(c, b->token, tl) != 0 || c[tl] != ' ')
        return NULL;
    c += tl + 1, n -= tl + 1;
    for (size_t i = 0; i < n; i++)
        if (!((c[i] >= '0' && c[i] <= '9') || c[i] == '-' || c[i] == ':' || c[i] == ' ' ||
              c[i] == '.' || c[i] == '+' || c[i] == 'T'))
            return NULL;
    *len = n;
    return c;
}

/* Our own heartbeat: its instant is kept. The hook's attach and detach say
 * that the models changed: read the map again once this transaction is
 * confirmed. */
static void message(oc_walb_t *b, const oc_pgo_msg_t *m)
{
    if (!(m->message.flags & OC_PGO_MSG_TRANSACTIONAL) || !b->in_txn)
        return;
    if (is_prefix(m, OC_WALB_MAP_PREFIX)) {
        b->txn_remap = 1;
        return;
    }
    size_t len;
    const char *instant = heartbeat_instant(b, m, &len);
    if (instant == NULL)
        return;
    memcpy(b->txn_hb, instant, len);
    b->txn_hb[len] = '\0';
}

void oc_walb_set_token(oc_walb_t *b, const char *token)
{
    memcpy(b->token, token, OC_WALB_TOKEN_LEN);
    b->token[OC_WALB_TOKEN_LEN] = '\0';
}

oc_walb_res_t oc_walb_feed(oc_walb_t *b, const oc_pgo_msg_t *m, char *err)
{
    b->unknown = 0;
    switch (m->type) {
    case OC_PGO_BEGIN:
        txn_open(b, m->begin.xid);
        return OC_WALB_OK;
    case OC_PGO_COMMIT:
        if (!b->in_txn)
            return oc_fail(err, OC_EINVAL, "a commit outside a transaction"), OC_WALB_BAD;
        return txn_commit(b, m, err);
    case OC_PGO_RELATION:
        return relation(b, m);
    case OC_PGO_INSERT:
    case OC_PGO_UPDATE:
    case OC_PGO_DELETE:
        return change(b, m, err);
    case OC_PGO_TRUNCATE:
        return truncate(b, m, err);
    case OC_PGO_MESSAGE:
        message(b, m);
        return OC_WALB_OK;
    case OC_PGO_ORIGIN:
    case OC_PGO_TYPE:
        return OC_WALB_OK;
    case OC_PGO_UNKNOWN:
        break;
    }
    oc_fail(err, OC_EINVAL, "unexpected pgoutput message '%c'", m->type_byte);
    return OC_WALB_BAD;
}

void oc_walb_restart(oc_walb_t *b)
{
    b->nkeys = b->ncommitted;
    b->alen = b->acommitted;
    b->in_txn = 0;
    b->txn_remap = 0;
    for (size_t i = 0; i < b->nrels; i++)
        b->rels[i].key_idx = -1; /* Relation messages come again */
}

uint32_t oc_walb_unknown(const oc_walb_t *b)
{
    return b->unknown;
}

int oc_walb_remap(const oc_walb_t *b)
{
    return b->remap;
}

int oc_walb_ready(const oc_walb_t *b)
{
    return b->ntxn > 0;
}

int oc_walb_in_txn(const oc_walb_t *b)
{
    return b->in_txn;
}

size_t oc_walb_pending_keys(const oc_walb_t *b)
{
    return b->nkeys;
}

/* The batch's (model, key) pairs once each, in first-seen order: a row
 * changed several times in a batch (a hot row, a transaction that updates
 * it in a loop) is deleted from memcached and appended to the feed once.
 * Models are interned, so a pointer compare tells them apart. Out of memory:
 * left as it is (a duplicate costs a delete, never a miss). */
static size_t batch_dedupe(oc_walb_batch_t *bt)
{
    size_t n = bt->nkeys, cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    size_t *slot = n > 1 ? calloc(cap, sizeof(*slot)) : NULL; /* index + 1; 0: free */
    if (slot == NULL)
        return n;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)bt->models[i];
        for (size_t k = 0; k < bt->klens[i]; k++)
            h = (h ^ (unsigned char)bt->keys[i][k]) * 1099511628211ULL;
        size_t at = (size_t)h & (cap - 1);
        int dup = 0;
        for (; slot[at]; at = (at + 1) & (cap - 1)) {
            size_t j = slot[at] - 1;
            if (bt->models[j] == bt->models[i] && bt->klens[j] == bt->klens[i] &&
                memcmp(bt->keys[j], bt->keys[i], bt->klens[i]) == 0) {
                dup = 1;
                break;
            }
        }
        if (dup)
            continue;
        bt->models[kept] = bt->models[i];
        bt->keys[kept] = bt->keys[i];
        bt->klens[kept] = bt->klens[i];
        slot[at] = ++kept;
    }
    free(slot);
    return kept;
}

oc_status_t oc_walb_take(oc_walb_t *b, oc_walb_batch_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = b->ncommitted, bytes = b->acommitted;
    out->models = malloc((n ? n : 1) * sizeof(*out->models));
    out->keys = malloc((n ? n : 1) * sizeof(*out->keys));
    out->klens = malloc((n ? n : 1) * sizeof(*out->klens));
    out->whole = malloc((b->nwhole ? b->nwhole : 1) * sizeof(*out->whole));
    out->arena = malloc(bytes ? bytes : 1);
    out->xids = malloc((b->nxids ? b->nxids : 1) * sizeof(*out->xids));
    if (!out->models || !out->keys || !out->klens || !out->whole || !out->arena ||
        !out->xids) {
        oc_walb_batch_free(out);
        return OC_ENOMEM;
    }
    /* empty buffers may still be NULL: memcpy(NULL, 0) is undefined */
    if (bytes)
        memcpy(out->arena, b->arena, bytes);
    out->arena_len = bytes;
    for (size_t i = 0; i < n; i++) {
        out->models[i] = b->models[i];
        out->keys[i] = out->arena + b->koff[i];
        out->klens[i] = b->klen[i];
    }
    out->nkeys = n;
    out->nkeys = batch_dedupe(out); /* n: the accumulator's part moved out */
    if (b->nwhole)
        memcpy(out->whole, b->whole, b->nwhole * sizeof(*out->whole));
    out->nwhole = b->nwhole;
    out->end_lsn = b->end_lsn;
    out->commit_ts = b->commit_ts;
    out->first_commit_ts = b->first_commit_ts;
    memcpy(out->caught_up_at, b->caught_up_at, sizeof(out->caught_up_at));
    out->ntxn = b->ntxn;
    if (b->nxids)
        memcpy(out->xids, b->xids, b->nxids * sizeof(*out->xids));
    out->nxids = b->nxids;
    /* What is left is the open transaction's: move it to the front. */
    size_t open = b->nkeys - n, obytes = b->alen - bytes;
    if (open && n) {
        memmove(b->models, b->models + n, open * sizeof(*b->models));
        memmove(b->klen, b->klen + n, open * sizeof(*b->klen));
    }
    for (size_t i = 0; i < open; i++)
        b->koff[i] = b->koff[n + i] - bytes;
    if (obytes)
        memmove(b->arena, b->arena + bytes, obytes);
    b->nkeys = open;
    b->alen = obytes;
    b->ncommitted = b->acommitted = 0;
    b->nwhole = 0;
    b->commit_ts = b->first_commit_ts = 0;
    b->caught_up_at[0] = '\0';
    b->ntxn = 0;
    b->nxids = 0;
    shrink_all(b);
    return OC_OK;
}

void oc_walb_batch_free(oc_walb_batch_t *bt)
{
    free(bt->models);
    free(bt->keys);
    free(bt->klens);
    free(bt->whole);
    free(bt->arena);
    free(bt->xids);
    memset(bt, 0, sizeof(*bt));
}

/* ---- visibility -------------------------------------------------------------- */

static int xid_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

long oc_walb_running(const char *snap, const uint32_t *xids, size_t n)
{
    /* "xmin:xmax:xip,xip,..." (pg_snapshot's text form, 64-bit xids) */
    char *end;
    errno = 0;
    (void)strtoull(snap, &end, 10);
    if (errno || end == snap || *end != ':')
        return -1;
    const char *p = end + 1;
    unsigned long long xmax = strtoull(p, &end, 10);
    if (errno || end == p || *end != ':')
        return -1;
    p = end + 1;
    size_t nxip = 0, cap = 0;
    uint32_t *xip = NULL;
    while (*p) {
        unsigned long long x = strtoull(p, &end, 10);
        if (errno || end == p || (*end != ',' && *end != '\0'))
            goto bad;
        if (nxip == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            uint32_t *more = realloc(xip, ncap * sizeof(*xip));
            if (more == NULL)
                goto bad;
            xip = more;
            cap = ncap;
        }
        xip[nxip++] = (uint32_t)x; /* modulo 2^32, as the batch's */
        p = *end ? end + 1 : end;
    }
    if (nxip > 1)
        qsort(xip, nxip, sizeof(*xip), xid_cmp);
    long running = 0;
    for (size_t i = 0; i < n; i++)
        running += (uint32_t)(xids[i] - (uint32_t)xmax) < 0x80000000u ||
                   (nxip && bsearch(&xids[i], xip, nxip, sizeof(*xip), xid_cmp) != NULL);
    free(xip);
    return running;
bad:
    free(xip);
    return -1;
}
