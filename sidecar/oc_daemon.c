#include "oc_daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <grp.h>
#include <inttypes.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "oc_conn.h"
#include "oc_fill.h"
#include "oc_inval.h"
#include "oc_key.h"
#include "oc_log.h"
#include "oc_map.h"
#include "oc_mc.h"
#include "oc_metrics.h"
#include "oc_pg.h"
#include "oc_reload.h"
#include "oc_write.h"

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)l, (void)sa, (void)salen;
    oc_conn_accept(arg, fd);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    if (d->tcp_listener)
        evconnlistener_enable(d->tcp_listener);
    if (d->unix_listener)
        evconnlistener_enable(d->unix_listener);
}

/* EMFILE and friends: the pending connection stays queued, so the listener
 * stays readable and would fail again at once. Pause accepting for 100 ms
 * (clients wait in the kernel's backlog meanwhile) and log once a pause. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    oc_daemon_t *d = arg;
    d->stats.accept_errors++;
    oc_log_error("event=accept_failed reason=\"%s\" action=\"pausing accepts 100ms\"",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    if (d->tcp_listener)
        evconnlistener_disable(d->tcp_listener);
    if (d->unix_listener)
        evconnlistener_disable(d->unix_listener);
    struct timeval tv = {0, 100000};
    if (d->accept_timer == NULL)
        d->accept_timer = evtimer_new(d->base, on_accept_resume, d);
    if (d->accept_timer)
        evtimer_add(d->accept_timer, &tv);
}

/* Split "host:port" / "[v6]:port" into its parts. */
static oc_status_t split_hostport(const char *s, char *host, size_t hcap, char *port,
                                  size_t pcap, char *err)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return oc_fail(err, OC_ECONFIG, "listen: bad address '%s'", s);
        snprintf(host, hcap, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return oc_fail(err, OC_ECONFIG, "listen: bad address '%s'", s);
        snprintf(host, hcap, "%.*s", (int)(colon - s), s);
    }
    snprintf(port, pcap, "%s", colon + 1);
    return OC_OK;
}

static oc_status_t listen_tcp(oc_daemon_t *d, char *err)
{
    char host[256], port[16];
    if (split_hostport(d->conf->listen, host, sizeof(host), port, sizeof(port), err) !=
        OC_OK)
        return OC_ECONFIG;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        return oc_fail(err, OC_ECONFIG, "listen %s: %s", d->conf->listen,
                       gai_strerror(rc));
    d->tcp_listener = evconnlistener_new_bind(d->base, on_accept, d,
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                                  LEV_OPT_CLOSE_ON_EXEC,
                                              1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (d->tcp_listener == NULL)
        return oc_fail(err, OC_EIO, "listen %s: %s", d->conf->listen, strerror(errno));
    evconnlistener_set_error_cb(d->tcp_listener, on_accept_error);
    return OC_OK;
}

static oc_status_t listen_unix(oc_daemon_t *d, char *err)
{
    const char *path = d->conf->unix_socket;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        return oc_fail(err, OC_ECONFIG, "unix_socket: path too long");
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    struct stat sb;
    /* A socket left by an earlier run is ours to replace; anything else
     * at that path is not ours to delete. */
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode))
            return oc_fail(err, OC_ECONFIG, "unix_socket %s exists and is not a socket",
                           path);
        unlink(path);
    }
    mode_t old = umask(0777 & ~d->conf->unix_socket_mode);
    d->unix_listener = evconnlistener_new_bind(
        d->base, on_accept, d, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&sun, (int)sizeof(sun));
    umask(old);
    if (d->unix_listener == NULL)
        return oc_fail(err, OC_EIO, "unix_socket %s: %s", path, strerror(errno));
    if (chmod(path, d->conf->unix_socket_mode) != 0)
        return oc_fail(err, OC_EIO, "chmod %s: %s", path, strerror(errno));
    evconnlistener_set_error_cb(d->unix_listener, on_accept_error);
    return OC_OK;
}

/* Unique among the sidecars sharing a pool: random, with host-local pid. */

/* Started as root with `user =`: the listeners are bound, so become that
 * user (its group and supplementary groups too) before anything else runs. */
static oc_status_t drop_privileges(oc_daemon_t *d, char *err)
{
    const char *name = d->conf->user;
    if (geteuid() != 0) {
        oc_log_info("event=privileges user=%s note=\"not root; user setting ignored\"",
                    name);
        return OC_OK;
    }
    struct passwd *pw = getpwnam(name);
    if (pw == NULL)
        return oc_fail(err, OC_ECONFIG, "user %s: no such user", name);
    if (d->unix_listener && chown(d->conf->unix_socket, pw->pw_uid, pw->pw_gid) != 0)
        return oc_fail(err, OC_EIO, "chown %s: %s", d->conf->unix_socket,
                       strerror(errno));
    if (initgroups(name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0)
        return oc_fail(err, OC_EIO, "cannot become user %s: %s", name, strerror(errno));
    if (setuid(0) == 0) /* must be impossible now */
        return oc_fail(err, OC_EIO, "could regain root after dropping to %s", name);
    oc_log_info("event=privileges user=%s uid=%ld", name, (long)pw->pw_uid);
    return OC_OK;
}

/* ---- memcached health ---------------------------------------------------------- */

#define OC_PROBE_INTERVAL_S 2

static void free_mc_health(oc_daemon_t *d)
{
    for (size_t i = 0; i < d->stats.nmc; i++)
        free(d->stats.mc_names[i]);
    free(d->stats.mc_names);
    free(d->stats.mc_up);
    d->stats.mc_names = NULL;
    d->stats.mc_up = NULL;
    d->stats.nmc = 0;
    d->stats.mc_servers_up = 0;
}

/* (Re)build the per-server health table from the configured servers; all
 * start as up until the first probe says otherwise. */
oc_status_t oc_daemon_mc_health_init(oc_daemon_t *d)
{
    size_t n = d->conf->nservers;
    char **names = calloc(n, sizeof(*names));
    uint64_t *up = calloc(n, sizeof(*up));
    for (size_t i = 0; names && up && i < n; i++) {
        const oc_mc_server_conf_t *sv = &d->conf->servers[i];
        size_t len = strlen(sv->host) + 16;
        if ((names[i] = malloc(len)) == NULL)
            break;
        snprintf(names[i], len, strchr(sv->host, ':') ? "[%s]:%u" : "%s:%u", sv->host,
                 (unsigned)sv->port);
        up[i] = 1;
    }
    if (names == NULL || up == NULL || (n > 0 && names[n - 1] == NULL)) {
        for (size_t i = 0; names && i < n; i++)
            free(names[i]);
        free(names);
        free(up);
        return OC_ENOMEM;
    }
    free_mc_health(d);
    d->stats.mc_names = names;
    d->stats.mc_up = up;
    d->stats.nmc = n;
    d->stats.mc_servers_up = n;
    return OC_OK;
}

static void probe_done(oc_mc_job_t *job, void *arg)
{
    oc_daemon_t *d = arg;
    d->probing = 0;
    /* A reload may have changed the list while the probe was out. */
    if (job->n == d->stats.nmc) {
        uint64_t up = 0;
        for (size_t i = 0; i < job->n; i++) {
            uint64_t now_up = job->items[i].result == OC_MC_R_OK;
            if (now_up != d->stats.mc_up[i])
                oc_log(now_up ? OC_LOG_INFO : OC_LOG_WARN, "event=memcached_%s server=%s",
                       now_up ? "up" : "down", d->stats.mc_names[i]);
            d->stats.mc_up[i] = now_up;
            up += now_up;
        }
        d->stats.mc_servers_up = up;
    }
    for (size_t i = 0; i < job->n; i++)
        if (job->items[i].key[0] != '\0')
            free((char *)job->items[i].key);
    oc_mc_job_free(job);
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    struct timeval tv = {OC_PROBE_INTERVAL_S, 0};
    evtimer_add(d->probe_timer, &tv);
    if (d->probing || d->stopping)
        return;
    oc_mc_job_t *job = oc_mc_job_new_items(OC_MC_PROBE, d->conf->nservers, probe_done, d);
    if (job == NULL)
        return;
    for (size_t i = 0; i < d->conf->nservers; i++) {
        /* The job's own copies: a reload may free the config meanwhile. */
        job->items[i].key = strdup(d->conf->servers[i].host);
        job->items[i].flags = d->conf->servers[i].port;
        if (job->items[i].key == NULL)
            job->items[i].key = "";
    }
    d->probing = 1;
    oc_mc_submit(d->mc, job);
}

static void oc_daemon_close_listeners(oc_daemon_t *d)
{
    if (d->tcp_listener)
        evconnlistener_free(d->tcp_listener);
    d->tcp_listener = NULL;
    if (d->unix_listener) {
        evconnlistener_free(d->unix_listener);
        unlink(d->conf->unix_socket);
    }
    d->unix_listener = NULL;
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_daemon_t *d = arg;
    oc_log_warn("event=shutdown_timeout connections=%" PRIu64, d->stats.curr_connections);
    event_base_loopbreak(d->base);
}

/* SIGHUP: re-read the configuration; a bad one is refused, the old stays. */
static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    oc_daemon_t *d = arg;
    char err[OC_ERRLEN], clean[OC_ERRLEN];
    if (oc_reload(d, err) != OC_OK) {
        d->stats.reload_errors++;
        oc_log_error("event=reload_refused reason=\"%s\"",
                     oc_log_clean(clean, sizeof(clean), err));
        return;
    }
    d->stats.reloads++;
    oc_log_info("event=reloaded models=%zu memcached_servers=%zu", d->conf->nmodels,
                d->conf->nservers);
}

/* SIGTERM/SIGINT: stop accepting, let commands under way finish (at most
 * shutdown_timeout), then stop. A second signal stops at once. */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    oc_daemon_t *d = arg;
    if (d->stopping) {
        oc_log_info("event=stopping_now signal=%d", (int)sig);
        event_base_loopbreak(d->base);
        return;
    }
    oc_log_info("event=stopping signal=%d connections=%" PRIu64, (int)sig,
                d->stats.curr_connections);
    d->stopping = 1;
    oc_daemon_close_listeners(d); /* new connections are refused, not queued */
    uint32_t ms = d->conf->shutdown_timeout_ms;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    d->drain_timer = evtimer_new(d->base, on_drain_timeout, d);
    if (d->drain_timer == NULL || d->conns == NULL) {
        event_base_loopbreak(d->base);
        return;
    }
    evtimer_add(d->drain_timer, &tv);
    oc_conn_drain_all(d);
}

int oc_daemon_gate_hold(oc_daemon_t *d, struct event **timer, event_callback_fn cb,
                        void *arg)
{
    if (d->fault_fill_gate == NULL || access(d->fault_fill_gate, F_OK) != 0)
        return 0;
    if (*timer == NULL && (*timer = evtimer_new(d->base, cb, arg)) == NULL)
        return 0; /* out of memory: do not hold */
    evtimer_assign(*timer, d->base, cb, arg);
    struct timeval tv = {0, 10000};
    evtimer_add(*timer, &tv);
    return 1;
}

oc_status_t oc_daemon_init(oc_daemon_t *d, oc_conf_t *conf, char *err)
{
    memset(d, 0, sizeof(*d));
    d->conf = conf;
    d->started = time(NULL);
    d->rand_state = (unsigned)getpid() ^ (unsigned)d->started;
    d->max_key_len = OC_KEY_MAX - strlen(conf->key_prefix) - OC_KEY_GEN_ROOM;
    d->lease_ttl_s = (conf->load_timeout_ms + 999) / 1000 + 1;
    const char *gate = getenv("OBJCACHED_FAULT_FILL_GATE");
    if (gate && *gate) {
        d->fault_fill_gate = strdup(gate);
        oc_log_warn("event=fault_point name=fill_gate path=%s", gate);
    }
    oc_status_t st = OC_ENOMEM;
    signal(SIGPIPE, SIG_IGN);
    d->base = event_base_new();
    d->fills = oc_map_new(1024);
    d->model_gen = calloc(conf->nmodels ? conf->nmodels : 1, sizeof(*d->model_gen));
    d->stats.models = calloc(conf->nmodels ? conf->nmodels : 1, sizeof(*d->stats.models));
    d->model_names = calloc(conf->nmodels ? conf->nmodels : 1, sizeof(*d->model_names));
    if (d->base == NULL || d->fills == NULL || d->model_gen == NULL ||
        d->stats.models == NULL || d->model_names == NULL) {
        oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    d->sig_term = evsignal_new(d->base, SIGTERM, on_stop_signal, d);
    d->sig_int = evsignal_new(d->base, SIGINT, on_stop_signal, d);
    d->sig_hup = evsignal_new(d->base, SIGHUP, on_reload_signal, d);
    if (d->sig_term == NULL || d->sig_int == NULL || d->sig_hup == NULL ||
        evsignal_add(d->sig_term, NULL) || evsignal_add(d->sig_int, NULL) ||
        evsignal_add(d->sig_hup, NULL)) {
        oc_fail(err, OC_ENOMEM, "cannot install signal handlers");
        goto fail;
    }
    for (size_t i = 0; i < conf->nmodels; i++)
        d->model_names[i] = conf->models[i].name;
    d->stats.nmodels = conf->nmodels;
    d->stats.model_names = (const char *const *)d->model_names;
    if (conf->listen[0] && (st = listen_tcp(d, err)) != OC_OK)
        goto fail;
    if (conf->unix_socket[0] && (st = listen_unix(d, err)) != OC_OK)
        goto fail;
    if (oc_daemon_mc_health_init(d) != OC_OK ||
        (d->probe_timer = evtimer_new(d->base, on_probe, d)) == NULL) {
        st = oc_fail(err, OC_ENOMEM, "out of memory");
        goto fail;
    }
    struct timeval probe_tv = {0, 1000};
    evtimer_add(d->probe_timer, &probe_tv);
    if (conf->metrics_listen[0] && (d->metrics = oc_metrics_new(d, err)) == NULL) {
        st = OC_EIO;
        goto fail;
    }
    if (conf->user && (st = drop_privileges(d, err)) != OC_OK)
        goto fail;
    if ((st = oc_write_init(d, err)) != OC_OK)
        goto fail;
    d->mc = oc_mc_new(d->base, conf, err);
    if (d->mc == NULL) {
        st = OC_ECACHE;
        goto fail;
    }
    d->pg = oc_pg_new(d->base, conf, &d->stats, err);
    if (d->pg == NULL) {
        st = OC_EDB;
        goto fail;
    }
    oc_inval_read_generations(d);
    err[0] = '\0';
    d->inval = oc_inval_new(d, err);
    if (d->inval == NULL && err[0] != '\0') {
        st = OC_EDB;
        goto fail;
    }

    return OC_OK;
fail:
    oc_daemon_free(d);
    return st;
}

/* systemd's readiness protocol (sd_notify(3)): one datagram to the socket
 * named by NOTIFY_SOCKET. Written out rather than linking libsystemd for
 * these few lines; a no-op when not started by systemd. */
static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, sl) < 0)
        oc_log_warn("event=sd_notify_failed reason=\"%s\"", strerror(errno));
    close(fd);
}

oc_status_t oc_daemon_run(oc_daemon_t *d)
{
    oc_log_info("event=ready version=%s listen=%s unix_socket=%s models=%zu "
                "memcached_servers=%zu",
                OC_VERSION, d->conf->listen[0] ? d->conf->listen : "-",
                d->conf->unix_socket[0] ? d->conf->unix_socket : "-", d->conf->nmodels,
                d->conf->nservers);
    notify_systemd("READY=1\nSTATUS=serving");
    if (event_base_dispatch(d->base) < 0)
        return OC_EIO;
    notify_systemd("STOPPING=1");
    oc_log_info("event=stopped connections=%" PRIu64, d->stats.curr_connections);
    return OC_OK;
}

void oc_daemon_free(oc_daemon_t *d)
{
    oc_daemon_close_listeners(d);
    oc_conn_close_all(d);
    /* Workers first (their callbacks may start loads), then PostgreSQL. */
    oc_metrics_free(d->metrics);
    oc_inval_free(d->inval);
    oc_mc_free(d->mc);
    d->mc = NULL; /* oc_pg's last callbacks must not submit to it */
    oc_pg_free(d->pg);
    d->pg = NULL;
    oc_write_free_checks(d);
    oc_fill_retire_all(d);
    if (d->sig_term)
        event_free(d->sig_term);
    if (d->sig_int)
        event_free(d->sig_int);
    if (d->drain_timer)
        event_free(d->drain_timer);
    if (d->sig_hup)
        event_free(d->sig_hup);
    if (d->accept_timer)
        event_free(d->accept_timer);
    if (d->probe_timer)
        event_free(d->probe_timer);
    free_mc_health(d);
    oc_map_free(d->fills);
    free(d->tokens);
    free(d->model_gen);
    free(d->stats.models);
    free(d->model_names);
    if (d->base)
        event_base_free(d->base);
    oc_conf_free(d->conf);
    free(d->fault_fill_gate);
    memset(d, 0, sizeof(*d));
}
