#include "oc_daemon.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oc_conn.h"
#include "oc_ctx.h"
#include "oc_feed.h"
#include "oc_fill.h"
#include "oc_gate.h"
#include "oc_gens.h"
#include "oc_health.h"
#include "oc_inval.h"
#include "oc_key.h"
#include "oc_lag.h"
#include "oc_listen.h"
#include "oc_log.h"
#include "oc_mc.h"
#include "oc_metrics.h"
#include "oc_near.h"
#include "oc_pg.h"
#include "oc_reload.h"
#include "oc_req.h"
#include "oc_sampler.h"
#include "oc_sd.h"
#include "oc_stats.h"
#include "oc_wal.h"
#include "oc_write.h"

struct oc_daemon {
    oc_ctx_t ctx;
    oc_stats_t stats;
    oc_listen_t *listen;
    oc_conns_t *conns;
    oc_health_t *health;
    oc_lag_t *lag;
    oc_metrics_t *metrics;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *drain_timer; /* shutdown: the drain's deadline */
    struct event *drain_poll;  /* shutdown: waits for the writes' checks */
    char *pidfile;             /* written by us: removed at free */
};

/* ---- signals ------------------------------------------------------------- */

/* SIGHUP: re-read the configuration; a bad one is refused, the old stays. */
static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    oc_daemon_t *d = arg;
    char err[OC_ERRLEN], clean[OC_ERRLEN];
    if (oc_reload(&d->ctx, d->health, err) != OC_OK) {
        d->stats.reload_errors++;
        oc_log_error("event=reload_refused reason=\"%s\"",
                     oc_log_clean(clean, sizeof(clean), err));
        return;
    }
    d->stats.reloads++;
    size_t live = 0; /* the file's models: not the ones kept disabled */
    for (size_t i = 0; i < d->ctx.conf->nmodels; i++)
        live += !d->ctx.conf->models[i].disabled;
    oc_log_info("event=reloaded models=%zu memcached_servers=%zu", live,
                d->ctx.conf->nservers);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    oc_log_warn("event=shutdown_timeout connections=%" PRIu64, oc_conns_count(d->conns));
    event_base_loopbreak(d->ctx.base);
}

/* The clients are gone; what they were answered for may still have to be
 * checked against PostgreSQL (a push answered STORED before its check): wait
 * for that too, within shutdown_timeout. */
static void drain_writes(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    size_t n = oc_writes_pending(d->ctx.writes);
    if (n == 0) {
        event_base_loopbreak(d->ctx.base);
        return;
    }
    if (d->drain_poll == NULL) {
        oc_log_info("event=stopping_waits_for_writes writes=%zu", n);
        if ((d->drain_poll = evtimer_new(d->ctx.base, drain_writes, d)) == NULL) {
            event_base_loopbreak(d->ctx.base);
            return;
        }
    }
    struct timeval tv = {0, 20000};
    evtimer_add(d->drain_poll, &tv);
}

static void on_drained(void *arg)
{
    drain_writes(-1, 0, arg);
}

/* SIGTERM/SIGINT: stop accepting, let commands under way finish (at most
 * shutdown_timeout), then stop. A second signal stops at once. */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    oc_daemon_t *d = arg;
    if (d->ctx.stopping) {
        oc_log_info("event=stopping_now signal=%d", (int)sig);
        event_base_loopbreak(d->ctx.base);
        return;
    }
    oc_log_info("event=stopping signal=%d connections=%" PRIu64, (int)sig,
                oc_conns_count(d->conns));
    d->ctx.stopping = 1;
    /* New connections are refused, not queued; on a socket systemd passed
     * (oc_listen.h) they queue for the next process instead. */
    oc_listen_close(d->listen);
    uint32_t ms = d->ctx.conf->shutdown_timeout_ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    d->drain_timer = evtimer_new(d->ctx.base, on_drain_timeout, d);
    if (d->drain_timer == NULL) {
        event_base_loopbreak(d->ctx.base);
        return;
    }
    evtimer_add(d->drain_timer, &tv);
    oc_conns_drain(d->conns, on_drained, d);
}

static oc_status_t init_signals(oc_daemon_t *d, char *err)
{
    struct event_base *base = d->ctx.base;
    signal(SIGPIPE, SIG_IGN);
    d->sig_term = evsignal_new(base, SIGTERM, on_stop_signal, d);
    d->sig_int = evsignal_new(base, SIGINT, on_stop_signal, d);
    d->sig_hup = evsignal_new(base, SIGHUP, on_reload_signal, d);
    if (d->sig_term == NULL || d->sig_int == NULL || d->sig_hup == NULL ||
        evsignal_add(d->sig_term, NULL) || evsignal_add(d->sig_int, NULL) ||
        evsignal_add(d->sig_hup, NULL))
        return oc_fail(err, OC_ENOMEM, "cannot install signal handlers");
    return OC_OK;
}

/* ---- start ----------------------------------------------------------------- */

/* Started as root with `user =`: the listeners are bound, so become that
 * user (its group and supplementary groups too) before anything else runs. */
static oc_status_t drop_privileges(oc_daemon_t *d, char *err)
{
    const char *name = d->ctx.conf->user;
    if (geteuid() != 0) {
        oc_log_info("event=privileges user=%s note=\"not root; user setting ignored\"",
                    name);
        return OC_OK;
    }
    struct passwd *pw = getpwnam(name);
    if (pw == NULL)
        return oc_fail(err, OC_ECONFIG, "user %s: no such user", name);
    /* (else the check below, that root cannot be regained, would fail
     * with a message that blames the drop) */
    if (pw->pw_uid == 0)
        return oc_fail(err, OC_ECONFIG,
                       "user %s is root (uid 0): name an unprivileged user, or leave "
                       "user out",
                       name);
    if (oc_listen_chown(d->listen, pw->pw_uid, pw->pw_gid, err) != OC_OK)
        return OC_EIO;
    if (initgroups(name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0)
        return oc_fail(err, OC_EIO, "cannot become user %s: %s", name, strerror(errno));
    if (setuid(0) == 0) /* must be impossible now */
        return oc_fail(err, OC_EIO, "could regain root after dropping to %s", name);
    oc_log_info("event=privileges user=%s uid=%ld", name, (long)pw->pw_uid);
    return OC_OK;
}

/* Our pid to `path` (created 0644, replaced if it exists). Written once
 * the listeners are bound (a second daemon on the same address fails
 * before it touches the first one's pidfile), and before root is dropped:
 * a pidfile's usual directory (/run) is root's. Written as root, so a
 * symbolic link or anything but a regular file there is refused, not
 * followed (a link planted in a shared directory would truncate its
 * target; O_NONBLOCK: a FIFO must not hang the start), and so is a file
 * of more than one name: a hard link planted there to another file would
 * be written through (fs.protected_hardlinks, which forbids planting one
 * to a file its planter may not write, is a sysctl, not a promise). The
 * check is on the inode opened, before it is truncated. */
static oc_status_t write_pidfile(oc_daemon_t *d, const char *path, char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        close(fd);
        return oc_fail(err, OC_EIO, "cannot write pidfile %s: not a regular file", path);
    }
    if (fd >= 0 && sb.st_nlink != 1) {
        close(fd);
        return oc_fail(err, OC_EIO,
                       "cannot write pidfile %s: it has %ju names (a hard link), not one",
                       path, (uintmax_t)sb.st_nlink);
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int ok = fd >= 0 && ftruncate(fd, 0) == 0 && write(fd, buf, (size_t)len) == len;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (!ok)
        return oc_fail(err, OC_EIO, "cannot write pidfile %s: %s", path, strerror(errno));
    if ((d->pidfile = strdup(path)) == NULL) {
        unlink(path);
        return oc_fail(err, OC_ENOMEM, "out of memory");
    }
    return OC_OK;
}

/* Removes the pidfile only if it still holds our pid: a restart that did
 * not wait for our drain (our listeners close at its start) may have
 * written its own pid there meanwhile, which is not ours to remove (the
 * pidfile's twin of oc_listen's unix_socket_replaced). Best effort: once
 * root is dropped, the unlink fails in a directory only root may write. */
static void remove_pidfile(const char *path)
{
    if (path == NULL)
        return;
    char want[32], got[32];
    int wl = snprintf(want, sizeof(want), "%ld\n", (long)getpid());
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return; /* gone already, or a link: nothing of ours */
    ssize_t n = read(fd, got, sizeof(got));
    close(fd);
    if (n == wl && memcmp(got, want, (size_t)wl) == 0) {
        unlink(path);
        return;
    }
    char shown[256];
    oc_log_warn("event=pidfile_replaced path=\"%s\" action=\"left in place\"",
                oc_log_clean(shown, sizeof(shown), path));
}

static void on_accept(void *arg, evutil_socket_t fd)
{
    oc_daemon_t *d = arg;
    oc_conn_accept(d->conns, fd);
}

static int on_adopt(void *arg, int fd)
{
    oc_daemon_t *d = arg;
    return oc_conn_adopt(d->conns, fd);
}

/* The shared context's own fields, before any module exists. */
uint32_t oc_daemon_lease_ttl_s(uint32_t load_timeout_ms)
{
    return (uint32_t)(((uint64_t)load_timeout_ms + 999) / 1000 + 1);
}

static oc_status_t init_ctx(oc_daemon_t *d, oc_conf_t *conf, char *err)
{
    oc_ctx_t *ctx = &d->ctx;
    ctx->conf = conf;
    ctx->stats = &d->stats;
    ctx->started = (double)time(NULL);
    ctx->max_key_len = OC_KEY_MAX - strlen(conf->key_prefix) - OC_KEY_GEN_ROOM;
    ctx->lease_ttl_s = oc_daemon_lease_ttl_s(conf->load_timeout_ms);
    ctx->base = event_base_new();
    ctx->model_gen = calloc(conf->nmodels ? conf->nmodels : 1, sizeof(*ctx->model_gen));
    if (ctx->base == NULL || ctx->model_gen == NULL ||
        oc_stats_reserve_models(&d->stats, conf->nmodels) != 0)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    for (size_t i = 0; i < conf->nmodels; i++)
        oc_stats_name_model(&d->stats, i, conf->models[i].name);
    return OC_OK;
}

/* The modules, each after what it uses. */
static oc_status_t init_modules(oc_daemon_t *d, const char *pidfile, char *err)
{
    oc_ctx_t *ctx = &d->ctx;
    ctx->gate = oc_gate_new(ctx->base);
    if ((d->conns = oc_conns_new(ctx, err)) == NULL ||
        (d->listen = oc_listen_new(ctx, on_accept, d, err)) == NULL)
        return OC_EIO;
    if (ctx->conf->metrics_listen[0] && (d->metrics = oc_metrics_new(ctx, err)) == NULL)
        return OC_EIO;
    oc_status_t st;
    if (pidfile && (st = write_pidfile(d, pidfile, err)) != OC_OK)
        return st;
    if (ctx->conf->user && (st = drop_privileges(d, err)) != OC_OK)
        return st;
    if ((ctx->mc = oc_mc_new(ctx->base, ctx->conf, err)) == NULL)
        return OC_ECACHE;
    if ((ctx->pg = oc_pg_new(ctx->base, ctx->conf, ctx->stats, ctx->gate, err)) == NULL)
        return OC_EDB;
    if ((ctx->near = oc_near_new(ctx->conf->near_cache_size, ctx->stats)) == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory");
    if ((ctx->fills = oc_fills_new(ctx, err)) == NULL ||
        (ctx->reqs = oc_reqs_new(ctx, err)) == NULL ||
        (ctx->writes = oc_writes_new(ctx, err)) == NULL ||
        (d->health = oc_health_new(ctx, err)) == NULL ||
        (d->lag = oc_lag_new(ctx, err)) == NULL ||
        (ctx->sampler = oc_sampler_new(ctx, err)) == NULL ||
        (ctx->gens = oc_gens_new(ctx)) == NULL)
        return OC_ENOMEM;
    oc_inval_read_generations(ctx, "start");
    err[0] = '\0';
    /* With the WAL source, the sidecar that holds the slot drains the
     * outbox (oc_wal starts and stops the consumer). */
    ctx->inval = ctx->conf->wal ? NULL : oc_inval_new(ctx, err);
    if (ctx->inval == NULL && err[0] != '\0')
        return OC_EDB;
    ctx->feed = oc_feed_new(ctx, err);
    if (ctx->feed == NULL && err[0] != '\0')
        return OC_EDB;
    ctx->wal = oc_wal_new(ctx, err);
    if (ctx->wal == NULL && err[0] != '\0')
        return OC_EDB;
    /* The clients a restart handed over, once every module they use
     * exists (served from the loop's first turn). */
    oc_listen_adopt_clients(d->listen, on_adopt, d);
    return OC_OK;
}

oc_daemon_t *oc_daemon_new(oc_conf_t *conf, const char *pidfile, char *err)
{
    oc_daemon_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        oc_conf_free(conf);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    if (init_ctx(d, conf, err) != OC_OK || init_signals(d, err) != OC_OK ||
        init_modules(d, pidfile, err) != OC_OK) {
        if (d->ctx.conf == NULL)
            oc_conf_free(conf);
        oc_daemon_free(d);
        return NULL;
    }
    char clean[OC_ERRLEN];
    for (size_t i = 0; i < conf->nwarnings; i++)
        oc_log_warn("event=config_warning reason=\"%s\"",
                    oc_log_clean(clean, sizeof(clean), conf->warnings[i]));
    return d;
}

/* systemd's readiness protocol (oc_sd); a no-op when not started by it. */
static void notify_systemd(const char *state)
{
    if (oc_sd_enabled() && oc_sd_notify(state, NULL, 0) != 0)
        oc_log_warn("event=sd_notify_failed reason=\"%s\"", strerror(errno));
}

oc_status_t oc_daemon_run(oc_daemon_t *d)
{
    const oc_conf_t *conf = d->ctx.conf;
    oc_log_info("event=ready version=%s listen=%s unix_socket=%s models=%zu "
                "memcached_servers=%zu",
                OC_VERSION, conf->listen[0] ? conf->listen : "-",
                conf->unix_socket[0] ? conf->unix_socket : "-", conf->nmodels,
                conf->nservers);
    notify_systemd("READY=1\nSTATUS=serving");
    if (event_base_dispatch(d->ctx.base) < 0)
        return OC_EIO;
    uint64_t handed, closed;
    if (d->ctx.stopping && oc_conns_handover(d->conns, &handed, &closed))
        oc_log_info("event=handover handed=%llu closed=%llu left=%llu",
                    (unsigned long long)handed, (unsigned long long)closed,
                    (unsigned long long)oc_conns_count(d->conns));
    notify_systemd("STOPPING=1");
    oc_log_info("event=stopped connections=%" PRIu64,
                d->conns ? oc_conns_count(d->conns) : 0);
    return OC_OK;
}

static void free_event(struct event *ev)
{
    if (ev)
        event_free(ev);
}

/* The reverse of the dependencies: clients first (their requests detach),
 * then the pool and the loader, whose last callbacks (failures) still
 * reach the fills, the write path and the health probe, which go after. */
void oc_daemon_free(oc_daemon_t *d)
{
    if (d == NULL)
        return;
    oc_ctx_t *ctx = &d->ctx;
    oc_listen_free(d->listen);
    oc_conns_free(d->conns);
    oc_metrics_free(d->metrics);
    oc_inval_free(ctx->inval); /* (the WAL holder's consumer too) */
    ctx->inval = NULL;
    oc_feed_free(ctx->feed);
    ctx->feed = NULL;
    oc_sampler_close(ctx->sampler); /* its read in flight ends in oc_mc_free */
    if (ctx->reqs)
        oc_reqs_flush(ctx->reqs); /* reads bypassing memcached: to their loads */
    oc_mc_free(ctx->mc);
    ctx->mc = NULL; /* oc_pg's last callbacks must not submit to it */
    oc_pg_free(ctx->pg);
    ctx->pg = NULL;
    oc_wal_free(ctx->wal); /* after oc_mc: its deletes' callbacks ran */
    ctx->wal = NULL;
    oc_sampler_free(ctx->sampler);
    ctx->sampler = NULL;
    oc_writes_free(ctx->writes);
    oc_fills_free(ctx->fills);
    oc_reqs_free(ctx->reqs);
    oc_near_free(ctx->near); /* after every holder of its blobs' readers */
    oc_gens_free(ctx->gens);
    oc_health_free(d->health);
    oc_lag_free(d->lag);
    oc_gate_free(ctx->gate);
    free_event(d->sig_term);
    free_event(d->sig_int);
    free_event(d->sig_hup);
    free_event(d->drain_timer);
    free_event(d->drain_poll);
    free(ctx->model_gen);
    oc_stats_free(&d->stats);
    if (ctx->base)
        event_base_free(ctx->base);
    oc_conf_free(ctx->conf);
    remove_pidfile(d->pidfile);
    free(d->pidfile);
    free(d);
}
