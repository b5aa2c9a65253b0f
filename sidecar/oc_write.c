#include "oc_write.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "oc_entry.h"
#include "oc_fill.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_pg.h"

struct oc_write {
    oc_daemon_t *d;
    void *conn; /* NULL once detached */
    oc_write_reply_fn reply;
    int tombstone;
    const oc_model_conf_t *model; /* only until the job is submitted: a
                                     reload may free it afterwards */
    size_t model_idx;             /* stable across reloads (oc_reload.h) */
    int push_check;               /* the model's, copied at the push */
    char *version_column;         /* copied, for push_decide: a reload may free
                                     the model before memcached answers */
    json_t *version;              /* push with a version_column: its value */
    json_t *obj;                  /* push: the body, parsed, for the check */
    char ckey[OC_KEY_MAX + 16];   /* cache key */
    size_t ckey_len;
    size_t canon_off; /* the canonical id starts at ckey + canon_off */
    char *json;       /* push: owned copy of the body */
    size_t len;
    oc_write_t *check_next; /* in d->check_head's list */
};

/* One model's unordered pushes, checked by one load. */
typedef struct oc_check {
    oc_daemon_t *d;
    size_t model_idx;
    size_t n;
    oc_write_t **w;
    PGresult *res;       /* the rows the corrections point into */
    struct event *timer; /* the fill gate's (tests only) */
} oc_check_t;

static void push_check_add(oc_write_t *w);

static void write_free(oc_write_t *w)
{
    json_decref(w->obj);
    json_decref(w->version);
    free(w->version_column);
    free(w->json);
    free(w);
}

void oc_write_detach(oc_write_t *w)
{
    w->conn = NULL;
}

int oc_write_is_json_object(const char *json, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    int ok = v != NULL && json_is_object(v);
    json_decref(v);
    return ok;
}

/* -1, 0, 1 as a <, =, > b; 2 if they cannot be compared. */
static int version_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_string(a) && json_is_string(b)) {
        /* PostgreSQL's ISO timestamps in one pinned TimeZone sort as text. */
        int c = strcmp(json_string_value(a), json_string_value(b));
        return (c > 0) - (c < 0);
    }
    return 2;
}

/* Called by oc_mc with what the key holds: is our push newer than that?
 * Only a version compared with the cached object's can say so. An empty
 * key (or a lease, a "missing" entry) says nothing: the invalidation of a
 * later commit may have emptied it, so the write must be checked. */
static oc_mc_decision_t push_decide(const oc_mc_item_t *it, int found, uint32_t flags,
                                    const char *val, size_t len)
{
    const oc_write_t *w = it->decide_arg;
    oc_entry_kind_t kind = found ? oc_entry_kind(flags) : OC_ENTRY_NONE;
    if (kind == OC_ENTRY_TOMBSTONE)
        return OC_MC_KEEP;
    if (kind != OC_ENTRY_OBJECT || w->version == NULL)
        return OC_MC_WRITE_UNORDERED;
    json_error_t jerr;
    json_t *cur = json_loadb(val, len, 0, &jerr);
    const json_t *cv = cur ? json_object_get(cur, w->version_column) : NULL;
    int cmp = cv ? version_cmp(w->version, cv) : 2;
    json_decref(cur);
    if (cmp == -1)
        return OC_MC_KEEP;                                 /* older loses */
    return cmp == 2 ? OC_MC_WRITE_UNORDERED : OC_MC_WRITE; /* equal writes */
}

static void write_done(oc_mc_job_t *job, void *arg)
{
    oc_write_t *w = arg;
    oc_daemon_t *d = w->d;
    const char *line;
    char buf[OC_ERRLEN + 32];
    int check = !w->tombstone && w->push_check && job->items[0].result == OC_MC_R_OK &&
                job->items[0].unordered;
    switch (job->items[0].result) {
    case OC_MC_R_OK:
        line = w->tombstone ? "DELETED" : "STORED";
        break;
    case OC_MC_R_NOT_STORED:
        line = "NOT_STORED";
        d->stats.pushes_stale++;
        break;
    default:
        d->stats.mc_errors++;
        d->stats.server_errors++;
        snprintf(buf, sizeof(buf), "SERVER_ERROR %s",
                 job->err[0] ? job->err : "write failed");
        line = buf;
        break;
    }
    oc_mc_job_free(job);
    if (w->conn)
        w->reply(w->conn, line);
    w->conn = NULL;
    if (check)
        push_check_add(w);
    else
        write_free(w);
}

/* Parse the key into w->model and w->ckey. */
static oc_status_t write_key(oc_write_t *w, const char *key, size_t klen, char *err)
{
    oc_daemon_t *d = w->d;
    oc_key_t k;
    oc_status_t st = oc_key_parse(d->conf, key, klen, d->max_key_len, &k, err);
    if (st != OC_OK)
        return st;
    w->model = k.model;
    w->model_idx = k.model_idx;
    w->push_check = k.model->push_check;
    w->ckey_len =
        oc_key_cache_key(d->conf->key_prefix, k.model->name, d->model_gen[k.model_idx],
                         k.canon, k.canon_len, w->ckey, sizeof(w->ckey), &w->canon_off);
    return OC_OK;
}

static oc_status_t write_start(oc_write_t *w, oc_mc_op_t op, char *err)
{
    oc_daemon_t *d = w->d;
    oc_mc_job_t *job = oc_mc_job_new_items(op, 1, write_done, w);
    if (job == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    oc_mc_item_t *it = &job->items[0];
    it->key = w->ckey;
    it->klen = w->ckey_len;
    if (w->tombstone) {
        it->val = "";
        it->flags = oc_entry_flags(OC_ENTRY_TOMBSTONE);
        it->exptime_s = w->model->tombstone_ttl_s;
    } else {
        it->val = w->json;
        it->vlen = w->len;
        it->flags = oc_entry_flags(OC_ENTRY_OBJECT);
        it->exptime_s = w->model->ttl_s;
        it->decide = push_decide;
        it->decide_arg = w;
    }
    oc_fill_invalidate(d, w->ckey, w->ckey_len);
    oc_mc_submit(d->mc, job);
    return OC_OK;
}

static oc_write_t *write_new(oc_daemon_t *d, void *conn, oc_write_reply_fn reply)
{
    oc_write_t *w = calloc(1, sizeof(*w));
    if (w) {
        w->d = d;
        w->conn = conn;
        w->reply = reply;
    }
    return w;
}

oc_status_t oc_write_push(oc_daemon_t *d, const char *key, size_t klen, const char *json,
                          size_t len, void *conn, oc_write_reply_fn reply,
                          oc_write_t **out, char *err)
{
    *out = NULL;
    oc_write_t *w = write_new(d, conn, reply);
    if (w == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    oc_status_t st = write_key(w, key, klen, err);
    if (st != OC_OK)
        goto fail;
    json_error_t jerr;
    w->obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (w->obj == NULL || !json_is_object(w->obj)) {
        st = oc_fail(err, OC_EINVAL, "value is not a JSON object");
        goto fail;
    }
    if (w->model->version_column) {
        w->version = json_incref(json_object_get(w->obj, w->model->version_column));
        w->version_column = strdup(w->model->version_column);
        if (w->version == NULL || w->version_column == NULL) {
            st = oc_fail(err, OC_EINVAL, "value has no \"%s\" field",
                         w->model->version_column);
            goto fail;
        }
    }
    if ((w->json = malloc(len ? len : 1)) == NULL) {
        st = oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(w->json, json, len);
    w->len = len;
    if ((st = write_start(w, OC_MC_PUSH, err)) != OC_OK)
        goto fail;
    d->stats.cmd_push++;
    *out = w;
    return OC_OK;
fail:
    write_free(w);
    return st;
}

oc_status_t oc_write_tombstone(oc_daemon_t *d, const char *key, size_t klen, void *conn,
                               oc_write_reply_fn reply, oc_write_t **out, char *err)
{
    *out = NULL;
    oc_write_t *w = write_new(d, conn, reply);
    if (w == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    w->tombstone = 1;
    oc_status_t st = write_key(w, key, klen, err);
    if (st == OC_OK)
        st = write_start(w, OC_MC_SET, err);
    if (st != OC_OK) {
        write_free(w);
        return st;
    }
    d->stats.cmd_tombstone++;
    *out = w;
    return OC_OK;
}

/* ---- the check of unordered pushes ---------------------------------------
 *
 * A push the cache could not order (see push_decide) was stored, and may be
 * older than what PostgreSQL has: its app was slow to push, and a later
 * commit's invalidation already emptied the key. No invalidation will come
 * for that later commit again, so objcached asks PostgreSQL itself, after
 * the store: the row read then is at least as new as the push. If it
 * differs (or is gone), it replaces the pushed object by cas, only if the
 * key still holds exactly that object: a write that lands meanwhile wins,
 * and an invalidation that lands meanwhile deletes what the check wrote.
 * Pushes are checked in batches: one load per model per loop turn. */

static void check_free(oc_check_t *c)
{
    c->d->stats.loads_in_flight -= c->n;
    for (size_t i = 0; i < c->n; i++)
        write_free(c->w[i]);
    PQclear(c->res);
    if (c->timer)
        event_free(c->timer);
    free(c->w);
    free(c);
}

static void check_swapped(oc_mc_job_t *job, void *arg)
{
    oc_check_t *c = arg;
    if (job->errors)
        c->d->stats.mc_errors++;
    for (size_t i = 0; i < job->n; i++)
        c->d->stats.pushes_corrected += (job->items[i].result == OC_MC_R_OK);
    oc_mc_job_free(job);
    check_free(c);
}

/* The row PostgreSQL returned for w (NULL: none) says the push is right. */
static int check_agrees(const oc_write_t *w, const char *row, size_t len)
{
    if (row == NULL)
        return 0;
    json_error_t jerr;
    json_t *db = json_loadb(row, len, 0, &jerr);
    int same = db != NULL && json_equal(db, w->obj);
    json_decref(db);
    return same;
}

/* Each push's row: index i of c->w -> row number + 1, or 0 for none. */
static int *check_rows(const oc_check_t *c)
{
    int *rows = calloc(c->n, sizeof(*rows));
    oc_map_t *byid = oc_map_new(c->n);
    if (rows == NULL || byid == NULL) {
        free(rows);
        oc_map_free(byid);
        return NULL;
    }
    for (size_t i = 0; i < c->n; i++) {
        const oc_write_t *w = c->w[i];
        (void)oc_map_put(byid, w->ckey + w->canon_off, w->ckey_len - w->canon_off,
                         (void *)(uintptr_t)(i + 1));
    }
    for (int r = 0; r < PQntuples(c->res); r++) {
        if (PQgetisnull(c->res, r, 0) || PQgetisnull(c->res, r, 1))
            continue;
        void *v =
            oc_map_get(byid, PQgetvalue(c->res, r, 0), (size_t)PQgetlength(c->res, r, 0));
        if (v)
            rows[(uintptr_t)v - 1] = r + 1;
    }
    oc_map_free(byid);
    return rows;
}

/* Swap each pushed object that PostgreSQL disagrees with for its row (or a
 * "missing" entry). Without rows (the load failed) the pushed objects are
 * kept for missing_ttl only: unchecked, they must not live a full TTL. */
static void check_gate_cb(evutil_socket_t fd, short what, void *arg);

static void check_correct(oc_check_t *c)
{
    oc_daemon_t *d = c->d;
    if (d->mc && oc_daemon_gate_hold(d, &c->timer, check_gate_cb, c))
        return;
    const oc_model_conf_t *m = &d->conf->models[c->model_idx];
    int *rows = c->res ? check_rows(c) : NULL;
    oc_mc_job_t *job = (c->res == NULL || rows) && d->mc
                           ? oc_mc_job_new_items(OC_MC_SWAP, c->n, check_swapped, c)
                           : NULL;
    if (job == NULL) {
        free(rows);
        check_free(c);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) {
        const oc_write_t *w = c->w[i];
        int r = rows ? rows[i] - 1 : -1;
        const char *row = r >= 0 ? PQgetvalue(c->res, r, 1) : NULL;
        size_t rlen = r >= 0 ? (size_t)PQgetlength(c->res, r, 1) : 0;
        if (c->res && check_agrees(w, row, rlen))
            continue;
        oc_mc_item_t *it = &job->items[k++];
        it->key = w->ckey;
        it->klen = w->ckey_len;
        it->expect = w->json;
        it->expect_len = w->len;
        it->expect_flags = oc_entry_flags(OC_ENTRY_OBJECT);
        if (c->res == NULL) {
            it->val = w->json;
            it->vlen = w->len;
            it->flags = oc_entry_flags(OC_ENTRY_OBJECT);
            it->exptime_s = m->missing_ttl_s;
        } else if (row) {
            it->val = row;
            it->vlen = rlen;
            it->flags = oc_entry_flags(OC_ENTRY_OBJECT);
            it->exptime_s = m->ttl_s;
        } else {
            it->val = "";
            it->flags = oc_entry_flags(OC_ENTRY_MISSING);
            it->exptime_s = m->missing_ttl_s;
        }
    }
    free(rows);
    if (k == 0) {
        oc_mc_job_free(job);
        check_free(c);
        return;
    }
    job->n = k;
    d->stats.mc_sets += k;
    oc_mc_submit(d->mc, job);
}

static void check_gate_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    check_correct(arg);
}

static void check_loaded(oc_pg_load_t *load, PGresult *res, oc_status_t st,
                         const char *err, void *arg)
{
    oc_check_t *c = arg;
    oc_daemon_t *d = c->d;
    oc_pg_load_free(load);
    c->res = st == OC_OK ? res : NULL;
    if (st == OC_OK) {
        d->stats.pushes_checked += c->n;
    } else {
        char q[OC_ERRLEN];
        oc_log_warn("event=push_check_failed model=%s keys=%zu reason=\"%s\"",
                    d->conf->models[c->model_idx].name, c->n,
                    oc_log_clean(q, sizeof(q), err));
        d->stats.pushes_unchecked += c->n;
    }
    check_correct(c);
}

/* Take the queued pushes of the first one's model out of the queue. */
static oc_check_t *check_take(oc_daemon_t *d)
{
    size_t m = d->check_head->model_idx, n = 0;
    for (oc_write_t *w = d->check_head; w; w = w->check_next)
        n += (w->model_idx == m);
    oc_check_t *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->w = malloc(n * sizeof(*c->w))) == NULL) {
        free(c);
        return NULL;
    }
    c->d = d;
    c->model_idx = m;
    oc_write_t **link = &d->check_head, *last = NULL;
    while (*link) {
        oc_write_t *w = *link;
        if (w->model_idx == m) {
            *link = w->check_next;
            c->w[c->n++] = w;
        } else {
            last = w;
            link = &w->check_next;
        }
    }
    d->check_tail = last;
    return c;
}

/* Push i's canonical id, for the check's load. */
static void check_id(const void *arg, size_t i, const char **p, size_t *len)
{
    const oc_write_t *w = ((const oc_check_t *)arg)->w[i];
    *p = w->ckey + w->canon_off;
    *len = w->ckey_len - w->canon_off;
}

static void check_start(oc_check_t *c)
{
    char *lit = oc_pg_array_literal_of(c->n, check_id, c);
    oc_pg_load_t *load = lit ? oc_pg_load_new(c->model_idx, lit, check_loaded, c) : NULL;
    if (load == NULL) {
        free(lit);
        oc_log_error("event=oom where=push_check");
        check_loaded(NULL, NULL, OC_ENOMEM, "out of memory", c);
        return;
    }
    oc_pg_submit(c->d->pg, load);
}

static void check_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    while (d->check_head) {
        oc_check_t *c = check_take(d);
        if (c == NULL) { /* out of memory: try again next turn */
            oc_log_error("event=oom where=push_check");
            event_active(d->check_ev, EV_TIMEOUT, 0);
            return;
        }
        check_start(c);
    }
}

static void push_check_add(oc_write_t *w)
{
    oc_daemon_t *d = w->d;
    d->stats.loads_in_flight++; /* a load and a write-back, as a fill */
    w->check_next = NULL;
    if (d->check_tail)
        d->check_tail->check_next = w;
    else
        d->check_head = w;
    d->check_tail = w;
    if (d->check_ev) /* a no-op when it is active already */
        event_active(d->check_ev, EV_TIMEOUT, 0);
}

oc_status_t oc_write_init(oc_daemon_t *d, char *err)
{
    d->check_ev = event_new(d->base, -1, 0, check_run, d);
    return d->check_ev ? OC_OK : oc_fail(err, OC_ENOMEM, "out of memory");
}

void oc_write_free_checks(oc_daemon_t *d)
{
    while (d->check_head) {
        oc_write_t *w = d->check_head;
        d->check_head = w->check_next;
        d->stats.loads_in_flight--;
        write_free(w);
    }
    d->check_tail = NULL;
    if (d->check_ev)
        event_free(d->check_ev);
    d->check_ev = NULL;
}
