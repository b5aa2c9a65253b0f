#include "oc_write.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "oc_entry.h"
#include "oc_fill.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_mc.h"

struct oc_write {
    oc_daemon_t *d;
    void *conn;                 /* NULL once detached */
    oc_write_reply_fn reply;
    int tombstone;
    const oc_model_conf_t *model; /* only until the job is submitted: a
                                     reload may free it afterwards */
    char *version_column;       /* copied, for push_decide on a worker */
    json_t *version;            /* push with a version_column: its value */
    char ckey[OC_KEY_MAX + 16]; /* cache key */
    size_t ckey_len;
    char *json;                 /* push: owned copy of the body */
    size_t len;
};

static void write_free(oc_write_t *w)
{
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

/* Runs on a memcached worker: is our push newer than what is cached? */
static int push_decide(const oc_mc_item_t *it, int found, uint32_t flags, const char *val,
                       size_t len)
{
    const oc_write_t *w = it->decide_arg;
    if (!found)
        return 1;
    oc_entry_kind_t kind = oc_entry_kind(flags);
    if (kind == OC_ENTRY_TOMBSTONE)
        return 0;
    if (kind != OC_ENTRY_OBJECT || w->version == NULL)
        return 1; /* a lease, a "missing" entry, a foreign item: replace */
    json_error_t jerr;
    json_t *cur = json_loadb(val, len, 0, &jerr);
    const json_t *cv = cur ? json_object_get(cur, w->version_column) : NULL;
    int cmp = cv ? version_cmp(w->version, cv) : 2;
    json_decref(cur);
    return cmp != -1; /* older loses; equal or incomparable writes */
}

static void write_done(oc_mc_job_t *job, void *arg)
{
    oc_write_t *w = arg;
    oc_daemon_t *d = w->d;
    const char *line;
    char buf[OC_ERRLEN + 32];
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
        snprintf(buf, sizeof(buf), "SERVER_ERROR %s", job->err[0] ? job->err : "write failed");
        line = buf;
        break;
    }
    oc_mc_job_free(job);
    if (w->conn)
        w->reply(w->conn, line);
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
    size_t canon_off;
    w->ckey_len = oc_key_cache_key(d->conf->key_prefix, k.model->name,
                                   d->model_gen[k.model_idx], k.canon, k.canon_len, w->ckey,
                                   sizeof(w->ckey), &canon_off);
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
    json_t *obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        st = oc_fail(err, OC_EINVAL, "value is not a JSON object");
        goto fail;
    }
    if (w->model->version_column) {
        w->version = json_incref(json_object_get(obj, w->model->version_column));
        w->version_column = strdup(w->model->version_column);
        if (w->version == NULL || w->version_column == NULL) {
            json_decref(obj);
            st = oc_fail(err, OC_EINVAL, "value has no \"%s\" field", w->model->version_column);
            goto fail;
        }
    }
    json_decref(obj);
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
