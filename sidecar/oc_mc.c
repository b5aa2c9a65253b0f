#include "oc_mc.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <libmemcached/memcached.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oc_log.h"
#include "oc_map.h"

typedef struct oc_mc_worker {
    oc_mc_t *mc;
    pthread_t thread;
    memcached_st *memc;
    memcached_st *next_memc; /* a reload's new pool, taken before the next job */
    int started;
} oc_mc_worker_t;

struct oc_mc {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    oc_mc_job_t *queue_head, *queue_tail; /* waiting for a worker */
    oc_mc_job_t *done_head, *done_tail;   /* finished, for the loop */
    int stopping;
    int notify_fd[2]; /* worker -> loop wake-up pipe */
    struct event *notify_ev;
    oc_mc_worker_t *workers;
    size_t nworkers;
};

/* ---- jobs ---------------------------------------------------------------- */

oc_mc_job_t *oc_mc_job_new_get(size_t n, oc_mc_done_fn done, void *arg)
{
    size_t sz = sizeof(oc_mc_job_t) + n * (sizeof(char *) + sizeof(size_t) +
                                           sizeof(oc_mc_hit_t));
    oc_mc_job_t *job = calloc(1, sz);
    if (job == NULL)
        return NULL;
    job->op = OC_MC_GET;
    job->n = n;
    job->hits = (oc_mc_hit_t *)(job + 1);
    job->keys = (const char **)(job->hits + n);
    job->key_lens = (size_t *)(job->keys + n);
    job->done = done;
    job->arg = arg;
    return job;
}

oc_mc_job_t *oc_mc_job_new_items(oc_mc_op_t op, size_t n, oc_mc_done_fn done,
                                 void *arg)
{
    oc_mc_job_t *job = calloc(1, sizeof(oc_mc_job_t) + n * sizeof(oc_mc_item_t));
    if (job == NULL)
        return NULL;
    job->op = op;
    job->n = n;
    job->items = (oc_mc_item_t *)(job + 1);
    job->done = done;
    job->arg = arg;
    return job;
}

void oc_mc_job_free(oc_mc_job_t *job)
{
    if (job == NULL)
        return;
    free(job->arena);
    free(job);
}

static void job_error(oc_mc_job_t *job, const char *what, memcached_st *memc,
                      memcached_return_t rc)
{
    if (job->errors++ == 0)
        snprintf(job->err, sizeof(job->err), "%s: %s", what,
                 memcached_last_error_message(memc) ? memcached_last_error_message(memc)
                                                    : memcached_strerror(memc, rc));
}

/* ---- worker side ----------------------------------------------------------- */

static int arena_append(oc_mc_job_t *job, const char *p, size_t len, size_t *off)
{
    if (job->arena_len + len > job->arena_cap) {
        size_t cap = job->arena_cap ? job->arena_cap : 4096;
        while (cap < job->arena_len + len)
            cap *= 2;
        char *a = realloc(job->arena, cap);
        if (a == NULL)
            return -1;
        job->arena = a;
        job->arena_cap = cap;
    }
    if (len > 0) /* an empty value may come as NULL */
        memcpy(job->arena + job->arena_len, p, len);
    *off = job->arena_len;
    job->arena_len += len;
    return 0;
}

static void store_hit(oc_mc_job_t *job, oc_map_t *index,
                      const memcached_result_st *r)
{
    const char *k = memcached_result_key_value(r);
    size_t klen = memcached_result_key_length(r);
    void *v = oc_map_get(index, k, klen);
    if (v == NULL)
        return; /* not a key we asked for: ignore */
    oc_mc_hit_t *hit = &job->hits[(uintptr_t)v - 1];
    if (arena_append(job, memcached_result_value(r), memcached_result_length(r),
                     &hit->off) != 0) {
        if (job->errors++ == 0)
            snprintf(job->err, sizeof(job->err), "out of memory");
        return;
    }
    hit->found = 1;
    hit->len = memcached_result_length(r);
    hit->flags = memcached_result_flags(r);
    hit->cas = memcached_result_cas(r);
}

static void run_get(oc_mc_job_t *job, memcached_st *memc)
{
    oc_map_t *index = oc_map_new(job->n);
    if (index == NULL) {
        job->errors = job->n;
        snprintf(job->err, sizeof(job->err), "out of memory");
        return;
    }
    for (size_t i = 0; i < job->n; i++)
        (void)oc_map_put(index, job->keys[i], job->key_lens[i],
                         (void *)(uintptr_t)(i + 1));
    memcached_return_t rc = memcached_mget(memc, job->keys, job->key_lens, job->n);
    if (rc != MEMCACHED_SUCCESS)
        job_error(job, "mget", memc, rc); /* e.g. SOME_ERRORS: fetch the rest */
    memcached_result_st res;
    memcached_result_create(memc, &res);
    memcached_result_st *r;
    while ((r = memcached_fetch_result(memc, &res, &rc)) != NULL)
        store_hit(job, index, r);
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
        job_error(job, "fetch", memc, rc);
    memcached_result_free(&res);
    oc_map_free(index);
}

/* Map a libmemcached answer to an item result; count real failures. */
static oc_mc_result_t item_result(oc_mc_job_t *job, memcached_st *memc,
                                  memcached_return_t rc, const char *what)
{
    switch (rc) {
    case MEMCACHED_SUCCESS:
    case MEMCACHED_STORED:
    case MEMCACHED_DELETED:
        return OC_MC_R_OK;
    case MEMCACHED_NOTSTORED:
        return OC_MC_R_NOT_STORED;
    case MEMCACHED_NOTFOUND:
        return OC_MC_R_NOT_FOUND;
    case MEMCACHED_DATA_EXISTS:
        return OC_MC_R_EXISTS;
    default:
        job_error(job, what, memc, rc);
        return OC_MC_R_ERROR;
    }
}

static void run_items(oc_mc_job_t *job, memcached_st *memc)
{
    for (size_t i = 0; i < job->n; i++) {
        oc_mc_item_t *it = &job->items[i];
        time_t exp = (time_t)it->exptime_s;
        memcached_return_t rc;
        const char *what;
        switch (job->op) {
        case OC_MC_SET:
            rc = memcached_set(memc, it->key, it->klen, it->val, it->vlen, exp, it->flags);
            what = "set";
            break;
        case OC_MC_ADD:
            rc = memcached_add(memc, it->key, it->klen, it->val, it->vlen, exp, it->flags);
            what = "add";
            break;
        case OC_MC_DELETE:
            rc = memcached_delete(memc, it->key, it->klen, 0);
            what = "delete";
            break;
        case OC_MC_CAS:
            rc = memcached_cas(memc, it->key, it->klen, it->val, it->vlen, exp, it->flags,
                               it->cas);
            what = "cas";
            break;
        default:
            return;
        }
        it->result = item_result(job, memc, rc, what);
    }
}

/* SWAP, step one: read every key's current value and cas in one multi-get,
 * and keep the cas of the keys that still hold what is expected. */
static void swap_read_expected(oc_mc_job_t *job, memcached_st *memc)
{
    oc_map_t *index = oc_map_new(job->n);
    const char **keys = malloc(job->n * sizeof(*keys));
    size_t *lens = malloc(job->n * sizeof(*lens));
    if (index == NULL || keys == NULL || lens == NULL) {
        for (size_t i = 0; i < job->n; i++)
            job->items[i].result = OC_MC_R_ERROR;
        job->errors = job->n;
        snprintf(job->err, sizeof(job->err), "out of memory");
        goto done;
    }
    for (size_t i = 0; i < job->n; i++) {
        keys[i] = job->items[i].key;
        lens[i] = job->items[i].klen;
        job->items[i].result = OC_MC_R_NOT_STORED; /* until seen as expected */
        (void)oc_map_put(index, keys[i], lens[i], (void *)(uintptr_t)(i + 1));
    }
    memcached_return_t rc = memcached_mget(memc, keys, lens, job->n);
    if (rc != MEMCACHED_SUCCESS)
        job_error(job, "mget", memc, rc);
    memcached_result_st res;
    memcached_result_create(memc, &res);
    memcached_result_st *r;
    while ((r = memcached_fetch_result(memc, &res, &rc)) != NULL) {
        void *v = oc_map_get(index, memcached_result_key_value(r),
                             memcached_result_key_length(r));
        if (v == NULL)
            continue;
        oc_mc_item_t *it = &job->items[(uintptr_t)v - 1];
        if (memcached_result_flags(r) == it->expect_flags &&
            memcached_result_length(r) == it->expect_len &&
            (it->expect_len == 0 ||
             memcmp(memcached_result_value(r), it->expect, it->expect_len) == 0)) {
            it->cas = memcached_result_cas(r);
            it->result = OC_MC_R_OK; /* as expected: replace it below */
        }
    }
    memcached_result_free(&res);
done:
    oc_map_free(index);
    free(keys);
    free(lens);
}

static void run_swap(oc_mc_job_t *job, memcached_st *memc)
{
    swap_read_expected(job, memc);
    for (size_t i = 0; i < job->n; i++) {
        oc_mc_item_t *it = &job->items[i];
        if (it->result != OC_MC_R_OK)
            continue;
        memcached_return_t rc = memcached_cas(memc, it->key, it->klen, it->val, it->vlen,
                                              (time_t)it->exptime_s, it->flags, it->cas);
        it->result = item_result(job, memc, rc, "cas");
        if (it->result == OC_MC_R_EXISTS || it->result == OC_MC_R_NOT_FOUND)
            it->result = OC_MC_R_NOT_STORED; /* replaced after our read */
    }
}

#define OC_MC_PUSH_TRIES 8

/* PUSH of one item: read, decide, write by cas or add; again if raced. */
static void push_one(oc_mc_job_t *job, memcached_st *memc, oc_mc_item_t *it)
{
    for (int tries = 0; tries < OC_MC_PUSH_TRIES; tries++) {
        const char *keys[1] = {it->key};
        size_t lens[1] = {it->klen};
        memcached_return_t rc = memcached_mget(memc, keys, lens, 1);
        if (rc != MEMCACHED_SUCCESS) {
            it->result = item_result(job, memc, rc, "mget");
            return;
        }
        memcached_result_st res;
        memcached_result_create(memc, &res);
        memcached_result_st *r = memcached_fetch_result(memc, &res, &rc);
        int found = (r != NULL);
        uint64_t cas = found ? memcached_result_cas(r) : 0;
        oc_mc_decision_t write = it->decide(it, found,
                               found ? memcached_result_flags(r) : 0,
                               found ? memcached_result_value(r) : NULL,
                               found ? memcached_result_length(r) : 0);
        if (found) /* drain the END of the multi-get */
            while (memcached_fetch_result(memc, &res, &rc) != NULL) {
            }
        memcached_result_free(&res);
        if (write == OC_MC_KEEP) {
            it->result = OC_MC_R_NOT_STORED;
            return;
        }
        it->unordered = (write == OC_MC_WRITE_UNORDERED);
        time_t exp = (time_t)it->exptime_s;
        rc = found ? memcached_cas(memc, it->key, it->klen, it->val, it->vlen, exp,
                                   it->flags, cas)
                   : memcached_add(memc, it->key, it->klen, it->val, it->vlen, exp,
                                   it->flags);
        if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_STORED) {
            it->result = OC_MC_R_OK;
            return;
        }
        if (rc != MEMCACHED_DATA_EXISTS && rc != MEMCACHED_NOTFOUND &&
            rc != MEMCACHED_NOTSTORED) {
            it->result = item_result(job, memc, rc, found ? "cas" : "add");
            return;
        }
        /* Someone wrote the key between our read and our write: decide again. */
    }
    it->result = OC_MC_R_ERROR;
    if (job->errors++ == 0)
        snprintf(job->err, sizeof(job->err), "push: key kept changing, gave up");
}

/* One server, one fresh connection, one version command: the probe does
 * not touch the pool's own connections or their dead/alive marks. */
static void run_probe(oc_mc_job_t *job, memcached_st *pool)
{
    uint64_t connect_ms = memcached_behavior_get(pool, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT);
    uint64_t poll_ms = memcached_behavior_get(pool, MEMCACHED_BEHAVIOR_POLL_TIMEOUT);
    for (size_t i = 0; i < job->n; i++) {
        oc_mc_item_t *it = &job->items[i];
        memcached_st *m = memcached_create(NULL);
        it->result = OC_MC_R_ERROR;
        if (m == NULL)
            continue;
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, connect_ms);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, poll_ms);
        if (memcached_server_add(m, it->key, (in_port_t)it->flags) == MEMCACHED_SUCCESS &&
            memcached_version(m) == MEMCACHED_SUCCESS)
            it->result = OC_MC_R_OK;
        memcached_free(m);
    }
}

static void run_push(oc_mc_job_t *job, memcached_st *memc)
{
    for (size_t i = 0; i < job->n; i++)
        push_one(job, memc, &job->items[i]);
}

static void *worker_main(void *arg)
{
    oc_mc_worker_t *w = arg;
    oc_mc_t *mc = w->mc;
    pthread_mutex_lock(&mc->lock);
    for (;;) {
        while (mc->queue_head == NULL && !mc->stopping)
            pthread_cond_wait(&mc->cond, &mc->lock);
        if (mc->stopping)
            break;
        oc_mc_job_t *job = mc->queue_head;
        mc->queue_head = job->next;
        if (mc->queue_head == NULL)
            mc->queue_tail = NULL;
        memcached_st *old = NULL;
        if (w->next_memc) { /* a reload changed the servers or timeouts */
            old = w->memc;
            w->memc = w->next_memc;
            w->next_memc = NULL;
        }
        pthread_mutex_unlock(&mc->lock);
        if (old)
            memcached_free(old);

        if (job->op == OC_MC_GET)
            run_get(job, w->memc);
        else if (job->op == OC_MC_SWAP)
            run_swap(job, w->memc);
        else if (job->op == OC_MC_PUSH)
            run_push(job, w->memc);
        else if (job->op == OC_MC_PROBE)
            run_probe(job, w->memc);
        else
            run_items(job, w->memc);

        pthread_mutex_lock(&mc->lock);
        job->next = NULL;
        int was_empty = (mc->done_head == NULL);
        if (mc->done_tail)
            mc->done_tail->next = job;
        else
            mc->done_head = job;
        mc->done_tail = job;
        if (was_empty) {
            char b = 1;
            ssize_t wr = write(mc->notify_fd[1], &b, 1);
            (void)wr; /* a full pipe already means "wake up" */
        }
    }
    pthread_mutex_unlock(&mc->lock);
    return NULL;
}

/* ---- loop side ------------------------------------------------------------- */

static oc_mc_job_t *take_done(oc_mc_t *mc)
{
    pthread_mutex_lock(&mc->lock);
    oc_mc_job_t *list = mc->done_head;
    mc->done_head = mc->done_tail = NULL;
    pthread_mutex_unlock(&mc->lock);
    return list;
}

static void run_callbacks(oc_mc_job_t *list)
{
    while (list) {
        oc_mc_job_t *next = list->next;
        list->next = NULL;
        list->done(list, list->arg);
        list = next;
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    run_callbacks(take_done(arg));
}

void oc_mc_submit(oc_mc_t *mc, oc_mc_job_t *job)
{
    job->next = NULL;
    pthread_mutex_lock(&mc->lock);
    if (mc->queue_tail)
        mc->queue_tail->next = job;
    else
        mc->queue_head = job;
    mc->queue_tail = job;
    pthread_cond_signal(&mc->cond);
    pthread_mutex_unlock(&mc->lock);
}

static memcached_st *make_memc(const oc_conf_t *conf, char *err)
{
    memcached_st *memc = memcached_create(NULL);
    if (memc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    struct { memcached_behavior_t b; uint64_t v; } behaviors[] = {
        {MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA},
        {MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1},
        {MEMCACHED_BEHAVIOR_TCP_NODELAY, 1},
        {MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1},
        {MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, conf->mc_connect_timeout_ms},
        {MEMCACHED_BEHAVIOR_POLL_TIMEOUT, conf->mc_io_timeout_ms},
        {MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)conf->mc_io_timeout_ms * 1000},
        {MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)conf->mc_io_timeout_ms * 1000},
        /* Mark a server dead on its first failure and skip it until
         * retry_timeout; do not eject it from the ring (that would move
         * every key it holds and back again). */
        {MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1},
        {MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, (conf->mc_retry_timeout_ms + 999) / 1000},
        {MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0},
    };
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++) {
        memcached_return_t rc = memcached_behavior_set(memc, behaviors[i].b, behaviors[i].v);
        if (rc != MEMCACHED_SUCCESS) {
            oc_fail(err, OC_ECACHE, "memcached behavior %d: %s", (int)behaviors[i].b,
                    memcached_strerror(memc, rc));
            goto fail;
        }
    }
    for (size_t i = 0; i < conf->nservers; i++) {
        const oc_mc_server_conf_t *s = &conf->servers[i];
        char host[256];
        size_t hl = strlen(s->host);
        /* libmemcached wants a bare IPv6 address. */
        if (hl >= 2 && s->host[0] == '[' && s->host[hl - 1] == ']')
            snprintf(host, sizeof(host), "%.*s", (int)(hl - 2), s->host + 1);
        else
            snprintf(host, sizeof(host), "%s", s->host);
        memcached_return_t rc =
            memcached_server_add_with_weight(memc, host, s->port, s->weight);
        if (rc != MEMCACHED_SUCCESS) {
            oc_fail(err, OC_ECACHE, "memcached server %s:%u: %s", host,
                    (unsigned)s->port, memcached_strerror(memc, rc));
            goto fail;
        }
    }
    return memc;
fail:
    memcached_free(memc);
    return NULL;
}

oc_mc_t *oc_mc_new(struct event_base *base, const oc_conf_t *conf, char *err)
{
    oc_mc_t *mc = calloc(1, sizeof(*mc));
    if (mc == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    mc->notify_fd[0] = mc->notify_fd[1] = -1;
    pthread_mutex_init(&mc->lock, NULL);
    pthread_cond_init(&mc->cond, NULL);
    if (pipe2(mc->notify_fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        oc_fail(err, OC_EIO, "pipe: %s", strerror(errno));
        goto fail;
    }
    mc->notify_ev = event_new(base, mc->notify_fd[0], EV_READ | EV_PERSIST,
                              on_notify, mc);
    mc->workers = calloc(conf->mc_workers, sizeof(*mc->workers));
    if (mc->notify_ev == NULL || mc->workers == NULL ||
        event_add(mc->notify_ev, NULL) != 0) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    mc->nworkers = conf->mc_workers;
    for (size_t i = 0; i < mc->nworkers; i++) {
        oc_mc_worker_t *w = &mc->workers[i];
        w->mc = mc;
        w->memc = make_memc(conf, err);
        if (w->memc == NULL)
            goto fail;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            oc_fail(err, OC_EIO, "cannot start a memcached worker thread");
            goto fail;
        }
        w->started = 1;
    }
    return mc;
fail:
    oc_mc_free(mc);
    return NULL;
}

oc_status_t oc_mc_reconfigure(oc_mc_t *mc, const oc_conf_t *conf, char *err)
{
    memcached_st **fresh = calloc(mc->nworkers, sizeof(*fresh));
    if (fresh == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    oc_status_t st = OC_OK;
    for (size_t i = 0; i < mc->nworkers && st == OC_OK; i++)
        if ((fresh[i] = make_memc(conf, err)) == NULL)
            st = OC_ECACHE;
    pthread_mutex_lock(&mc->lock);
    for (size_t i = 0; i < mc->nworkers && st == OC_OK; i++) {
        memcached_st *unused = mc->workers[i].next_memc;
        mc->workers[i].next_memc = fresh[i];
        fresh[i] = unused; /* freed below, outside the lock */
    }
    pthread_mutex_unlock(&mc->lock);
    for (size_t i = 0; i < mc->nworkers; i++)
        if (fresh[i])
            memcached_free(fresh[i]);
    free(fresh);
    return st;
}

static void fail_list(oc_mc_job_t *list)
{
    for (oc_mc_job_t *j = list; j; j = j->next) {
        j->errors = j->n;
        snprintf(j->err, sizeof(j->err), "shutting down");
    }
    run_callbacks(list);
}

void oc_mc_free(oc_mc_t *mc)
{
    if (mc == NULL)
        return;
    pthread_mutex_lock(&mc->lock);
    mc->stopping = 1;
    pthread_cond_broadcast(&mc->cond);
    pthread_mutex_unlock(&mc->lock);
    for (size_t i = 0; i < mc->nworkers; i++) {
        if (mc->workers[i].started)
            pthread_join(mc->workers[i].thread, NULL);
        if (mc->workers[i].memc)
            memcached_free(mc->workers[i].memc);
        if (mc->workers[i].next_memc)
            memcached_free(mc->workers[i].next_memc);
    }
    /* Finished jobs keep their results; queued ones never ran. */
    run_callbacks(take_done(mc));
    fail_list(mc->queue_head);
    mc->queue_head = mc->queue_tail = NULL;
    if (mc->notify_ev)
        event_free(mc->notify_ev);
    for (int i = 0; i < 2; i++)
        if (mc->notify_fd[i] >= 0)
            close(mc->notify_fd[i]);
    free(mc->workers);
    pthread_cond_destroy(&mc->cond);
    pthread_mutex_destroy(&mc->lock);
    free(mc);
}
