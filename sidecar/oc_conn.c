#include "oc_conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "oc_binconn.h"
#include "oc_binproto.h"
#include "oc_conf.h"
#include "oc_gate.h"
#include "oc_log.h"
#include "oc_near.h"
#include "oc_proto.h"
#include "oc_reply.h"
#include "oc_req.h"
#include "oc_sd.h"
#include "oc_stats.h"
#include "oc_write.h"

typedef struct oc_conn oc_conn_t;

/* The longest key token a meta command can carry and objcached accept: a
 * base64 key (b) that decodes to OC_KEY_MAX bytes. The k flag echoes it
 * whole. */
#define OC_KEY_B64_MAX (((OC_KEY_MAX + 2) / 3) * 4)

typedef enum oc_conn_state {
    OC_CONN_READING,
    OC_CONN_WAITING,
    OC_CONN_DATA,
    OC_CONN_SWALLOW,
    OC_CONN_CLOSING,
} oc_conn_state_t;

struct oc_conn {
    oc_conns_t *cs;
    evutil_socket_t fd;
    struct evbuffer *in, *out; /* read, not parsed yet; replies not sent yet */
    struct event *ev_read;     /* persistent; added while `reading` */
    struct event *ev_write;    /* added only when a write would block */
    struct event *ev_idle;     /* idle_timeout, or NULL */
    int reading;
    oc_conn_state_t state;
    oc_req_t *req;      /* WAITING: the get under way, or */
    oc_write_t *write;  /* WAITING: the push or tombstone under way */
    oc_reply_fmt_t fmt; /* how to answer the command under way */
    int quiet;          /* the command under way is a classic one with noreply: no
                         * reply at all, errors included (memcached's out_string) */
    char fmt_key[OC_KEY_B64_MAX + 1]; /* the key as sent, for the meta k flag */
    uint64_t data_len;                /* DATA: the push's body length */
    char data_key[OC_KEY_MAX + 1];    /* DATA: its key */
    size_t data_key_len;
    uint64_t swallow_left;  /* SWALLOW: data bytes to drop; 0 = drop to EOL */
    size_t scanned;         /* input bytes already searched for EOL */
    int detected;           /* the first byte has been seen: text or binary */
    int eof;                /* the client shut its side: answer, then close */
    int handover;           /* draining, idle: to systemd's store, not closed */
    int handed;             /* ... and it went there */
    oc_binconn_t *bin;      /* a binary connection's own state, else NULL */
    oc_conn_t *prev, *next; /* the connections' list */
};

struct oc_conns {
    oc_ctx_t *ctx;
    oc_conn_t *head;
    uint64_t count;
    oc_token_t *tokens; /* the command being parsed, any connection's */
    size_t ntokens;
    void (*drained)(void *arg); /* draining: called when the last one goes */
    void *drained_arg;
    int handover;             /* draining: idle ones go to systemd's store */
    uint64_t handed, closed;  /* draining: handed over, closed */
    uint64_t handover_failed; /* sends to systemd that failed (closed) */
};

static void conn_process(oc_conn_t *c);

static oc_ctx_t *conn_ctx(const oc_conn_t *c)
{
    return c->cs->ctx;
}

static void conn_set_state(oc_conn_t *c, oc_conn_state_t st);

/* Count what a reply was, for stats. A reply cut short (out of memory after
 * part of it, values by reference among them, went out) leaves the stream
 * out of step: no more commands, and the connection closes once what it
 * has is written (the client sees the reply end early). */
static void conn_count(oc_conn_t *c, oc_reply_kind_t k)
{
    oc_stats_t *st = conn_ctx(c)->stats;
    st->client_errors += k == OC_REPLY_CLIENT_ERROR;
    st->server_errors += k == OC_REPLY_SERVER_ERROR;
    if (k == OC_REPLY_BROKEN) {
        oc_log_error("event=oom where=conn_reply");
        conn_set_state(c, OC_CONN_CLOSING);
    }
}

/* Input buffered ahead of the command under way (pipelined commands, a
 * data block) is capped: past it, reading pauses until it is parsed. */
static size_t conn_in_cap(const oc_conn_t *c)
{
    const oc_conf_t *conf = conn_ctx(c)->conf;
    size_t cap = (size_t)conf->max_value + conf->max_line + 65536;
    /* A binary request's header, extras, key and value: holds already
     * (max_line >= 1 KiB), stated so that a change of the two sums cannot
     * leave a largest request unread for good. */
    if (cap < oc_binconn_max_request(conn_ctx(c)))
        cap = oc_binconn_max_request(conn_ctx(c));
    /* A data block accepted under a larger max_value (a reload lowered it
     * meanwhile) is still read whole: else reading would stop short of it
     * for good. */
    if (c->state == OC_CONN_DATA && c->data_len + 2 + conf->max_line + 65536 > cap)
        cap = (size_t)c->data_len + 2 + conf->max_line + 65536;
    return cap;
}

static void conn_set_reading(oc_conn_t *c, int on)
{
    if (on == c->reading)
        return;
    c->reading = on;
    if (on)
        event_add(c->ev_read, NULL);
    else
        event_del(c->ev_read);
}

/* Its events, buffers and socket (not the list or the counters). */
static void conn_release(oc_conn_t *c)
{
    if (c->ev_read)
        event_free(c->ev_read);
    if (c->ev_write)
        event_free(c->ev_write);
    if (c->ev_idle)
        event_free(c->ev_idle);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    if (c->fd >= 0)
        evutil_closesocket(c->fd);
    free(c);
}

static void conn_free(oc_conn_t *c)
{
    oc_conns_t *cs = c->cs;
    if (c->req)
        oc_req_detach(c->req);
    if (c->write)
        oc_write_detach(c->write);
    oc_binconn_free(c->bin);
    if (c->prev)
        c->prev->next = c->next;
    else
        cs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (cs->drained) {
        cs->handed += c->handed;
        cs->closed += !c->handed;
    }
    conn_release(c);
    cs->count--;
    cs->ctx->stats->curr_connections = cs->count;
    if (cs->drained && cs->head == NULL)
        cs->drained(cs->drained_arg); /* the last one drained */
}

static void conn_set_state(oc_conn_t *c, oc_conn_state_t st)
{
    c->state = st;
}

/* Idle for a handover: nothing read that is not answered (the next
 * process reads what the client sends next from the kernel), no binary
 * request partly consumed (a refused body being dropped: the next process
 * would read the rest as requests), and the client has not shut its side. */
static int conn_idle(const oc_conn_t *c)
{
    return !c->eof && evbuffer_get_length(c->in) == 0 &&
           (c->bin == NULL || oc_binconn_at_boundary(c->bin));
}

/* Draining, at a request boundary: close, or (restart_handover under
 * systemd) hand over to the next process once the output is written, if
 * the connection is idle (conn_idle). */
static void conn_drain_stop(oc_conn_t *c)
{
    c->handover = c->cs->handover && conn_idle(c);
    conn_set_state(c, OC_CONN_CLOSING);
}

/* The connection's socket to systemd's file descriptor store
 * (FDSTORE=1), for the next process: systemd's dup keeps it open when
 * conn_free closes ours (close, never shutdown, which would end it for
 * every holder). No protocol in the name: the next process detects it
 * again from the next request's first byte (conn_detect), as each binary
 * request begins with the magic and a text line does not. A failed send:
 * closed, as without systemd. */
static void conn_hand_over(oc_conn_t *c)
{
    oc_conns_t *cs = c->cs;
    if (cs->handover_failed || !conn_idle(c))
        return; /* a send failed before, or read something meanwhile */
    if (oc_sd_notify("FDSTORE=1\nFDNAME=" OC_SD_CLIENT_FDNAME, &c->fd, 1) != 0) {
        /* The rest would fail the same way, and a systemd that stopped
         * reading makes each send wait its 1 s timeout on the loop: with
         * thousands of idle clients the stop would outlast any timeout.
         * Every other connection is closed, as without systemd. */
        if (cs->handover_failed++ == 0)
            oc_log_warn("event=handover_failed reason=\"%s\" action=\"closing the "
                        "connections left\"",
                        strerror(errno));
        return;
    }
    c->handed = 1;
    cs->ctx->stats->handover_sent++;
}

/* An error a noreply command asked not to hear: memcached drops it too
 * (a client that sent noreply reads no reply, so one sent would be read as
 * the next command's, and every reply after it would be off by one).
 * Counted and logged at debug level instead. Returns 1 if dropped. */
static int conn_quiet_error(oc_conn_t *c, const char *why)
{
    if (!c->quiet)
        return 0;
    conn_ctx(c)->stats->noreply_errors++;
    char clean[OC_ERRLEN];
    oc_log_debug("event=noreply_error reason=\"%s\"",
                 oc_log_clean(clean, sizeof(clean), why ? why : "?"));
    return 1;
}

static void conn_client_error(oc_conn_t *c, const char *why)
{
    if (!conn_quiet_error(c, why))
        conn_count(c, oc_reply_client_error(c->out, why));
}

static void conn_server_error(oc_conn_t *c, const char *why)
{
    if (!conn_quiet_error(c, why))
        conn_count(c, oc_reply_server_error(c->out, why));
}

/* A get's reply, and the request is gone. */
static void conn_req_reply(oc_conn_t *c, oc_req_t *req)
{
    oc_ctx_t *ctx = conn_ctx(c);
    oc_req_hold(req, &c->fmt);
    c->fmt.fault_ref = oc_gate_oom(ctx->gate, "reply_ref");
    oc_reply_kind_t k =
        oc_reply_get(c->out, oc_req_result(req), &c->fmt, ctx->conf->max_reply);
    conn_count(c, k);
    /* Answered: not a SERVER_ERROR, whether a load failed or the values
     * passed max_reply (a binary get counts so too, oc_binconn). */
    ctx->stats->cmd_get += k == OC_REPLY_OK;
    oc_req_release(req, &c->fmt);
    c->req = NULL;
}

/* The get finished later: its reply, then the next command. */
static void conn_req_done(oc_req_t *req, void *arg)
{
    oc_conn_t *c = arg;
    conn_req_reply(c, req);
    if (c->state == OC_CONN_WAITING) /* not CLOSING: the reply was whole */
        conn_set_state(c, OC_CONN_READING);
    conn_process(c);
}

/* The push or tombstone finished. */
static void conn_write_done(void *arg, oc_write_outcome_t o, const char *err)
{
    oc_conn_t *c = arg;
    c->write = NULL;
    if (o != OC_WRITE_FAILED || !conn_quiet_error(c, err))
        conn_count(c, oc_reply_write(c->out, o, err, &c->fmt));
    conn_set_state(c, OC_CONN_READING);
    conn_process(c);
}

/* How to answer cmd: classic or meta, with the meta flags and key to echo;
 * decode a base64 key into *key. Returns 0, or -1 (and replies) if the key
 * is not valid base64. */
static int conn_fmt(oc_conn_t *c, const oc_cmd_t *cmd, oc_token_t *key, char *buf,
                    size_t cap)
{
    oc_reply_fmt_t *f = &c->fmt;
    *f = (oc_reply_fmt_t){.style = OC_STYLE_CLASSIC,
                          .gets = cmd->type == OC_CMD_GETS,
                          .noreply = cmd->noreply};
    /* (every command that comes here has a key; the analyzer cannot know) */
    *key = cmd->nkeys > 0 ? cmd->keys[0] : (oc_token_t){"", 0};
    if (cmd->type != OC_CMD_MS && cmd->type != OC_CMD_MD && cmd->type != OC_CMD_MG)
        return 0;
    f->style = OC_STYLE_META;
    f->meta_flags = cmd->meta.flags;
    snprintf(f->opaque, sizeof(f->opaque), "%.*s", (int)cmd->meta.opaque.len,
             cmd->meta.opaque.p);
    /* (longer: not a key objcached accepts, so never echoed) */
    f->klen = key->len > OC_KEY_B64_MAX ? OC_KEY_B64_MAX : key->len;
    memcpy(c->fmt_key, key->p, f->klen);
    f->key = c->fmt_key;
    if (!(cmd->meta.flags & OC_META_B))
        return 0;
    long n = oc_proto_base64_decode(key->p, key->len, buf, cap);
    if (n <= 0) {
        conn_client_error(c, "bad key encoding");
        return -1;
    }
    key->p = buf;
    key->len = (size_t)n;
    return 0;
}

static void conn_started(oc_conn_t *c, oc_status_t st, const char *err)
{
    if (st == OC_OK)
        conn_set_state(c, OC_CONN_WAITING);
    else if (st == OC_ENOMEM)
        conn_server_error(c, err);
    else
        conn_client_error(c, err);
}

static void cmd_delete(oc_conn_t *c, const oc_cmd_t *cmd)
{
    char err[OC_ERRLEN], buf[OC_KEY_MAX + 1];
    oc_token_t key;
    if (conn_fmt(c, cmd, &key, buf, sizeof(buf)) != 0)
        return;
    oc_status_t st = oc_write_tombstone(conn_ctx(c), key.p, key.len, conn_write_done, c,
                                        &c->write, err);
    conn_started(c, st, err);
}

/* `set` line parsed: read its data block next (or skip it if unusable). */
static void cmd_set(oc_conn_t *c, const oc_cmd_t *cmd)
{
    char buf[OC_KEY_MAX + 1];
    oc_token_t key;
    int bad_key = conn_fmt(c, cmd, &key, buf, sizeof(buf)) != 0;
    if (bad_key || cmd->data_len > conn_ctx(c)->conf->max_value || key.len > OC_KEY_MAX) {
        if (bad_key)
            ; /* already answered */
        else if (key.len > OC_KEY_MAX)
            conn_client_error(c, "key too long"); /* as for get and delete */
        else
            conn_server_error(c, "object too large for cache");
        c->swallow_left = cmd->data_len + 2;
        conn_set_state(c, OC_CONN_SWALLOW);
        return;
    }
    memcpy(c->data_key, key.p, key.len);
    c->data_key_len = key.len;
    c->data_len = cmd->data_len;
    conn_set_state(c, OC_CONN_DATA);
}

/* The whole data block of a `set` is in the input buffer: push it. */
static void conn_push(oc_conn_t *c, struct evbuffer *in)
{
    size_t n = (size_t)c->data_len;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)(n + 2));
    conn_set_state(c, OC_CONN_READING);
    if (data == NULL) {
        conn_server_error(c, "out of memory");
        evbuffer_drain(in, n + 2);
        return;
    }
    if (data[n] != '\r' || data[n + 1] != '\n') {
        conn_client_error(c, "bad data chunk");
        evbuffer_drain(in, n + 2);
        return;
    }
    char err[OC_ERRLEN];
    oc_status_t st = oc_write_push(conn_ctx(c), c->data_key, c->data_key_len, data, n,
                                   conn_write_done, c, &c->write, err);
    evbuffer_drain(in, n + 2); /* the push copied the body */
    conn_started(c, st, err);
}

static void cmd_stats(oc_conn_t *c, const oc_cmd_t *cmd)
{
    oc_ctx_t *ctx = conn_ctx(c);
    struct evbuffer *out = c->out;
    if (cmd->nkeys == 1 && cmd->keys[0].len == 5 &&
        memcmp(cmd->keys[0].p, "reset", 5) == 0) {
        oc_stats_reset(ctx->stats);
        oc_reply_text(out, "RESET");
        return;
    }
    if (cmd->nkeys != 0) {
        conn_count(c, oc_reply_error(out));
        return;
    }
    time_t now = time(NULL);
    evbuffer_add_printf(out,
                        "STAT pid %ld\r\nSTAT uptime %ld\r\nSTAT time %ld\r\n"
                        "STAT version %s\r\n",
                        (long)getpid(), (long)(now - (time_t)ctx->started), (long)now,
                        OC_VERSION);
    if (ctx->near) /* near_serving: not a past proof */
        oc_near_serving(ctx->near, oc_stats_now());
    oc_stats_write(ctx->stats, out);
    oc_reply_text(out, "END");
}

static void cmd_get(oc_conn_t *c, const oc_cmd_t *cmd)
{
    char err[OC_ERRLEN], buf[OC_KEY_MAX + 1];
    oc_token_t key;
    if (conn_fmt(c, cmd, &key, buf, sizeof(buf)) != 0)
        return;
    /* An mg looks up the decoded key and echoes the sent one. */
    const oc_token_t *keys = cmd->type == OC_CMD_MG ? &key : cmd->keys;
    oc_status_t st = oc_req_start(conn_ctx(c), keys, cmd->keys, cmd->nkeys, conn_req_done,
                                  c, &c->req, err);
    if (st == OC_OK && oc_req_complete(c->req)) { /* the near-cache answered */
        conn_req_reply(c, c->req);
        return;
    }
    conn_started(c, st, err);
}

/* The token array, grown to fit max_keys (the first command, or a reload
 * raised it). NULL if out of memory. */
static oc_token_t *conn_tokens(oc_conns_t *cs, size_t *n)
{
    size_t want = cs->ctx->conf->max_keys + 8;
    if (cs->ntokens < want) {
        oc_token_t *t = realloc(cs->tokens, want * sizeof(*t));
        if (t == NULL)
            return NULL;
        cs->tokens = t;
        cs->ntokens = want;
    }
    *n = cs->ntokens;
    return cs->tokens;
}

static void conn_command(oc_conn_t *c, const char *line, size_t len)
{
    oc_cmd_t cmd;
    char err[OC_ERRLEN];
    size_t ntok;
    oc_token_t *tok = conn_tokens(c->cs, &ntok);
    if (tok == NULL) {
        conn_server_error(c, "out of memory");
        return;
    }
    oc_status_t st = oc_proto_parse(line, len, tok, ntok, &cmd, err);
    if (st == OC_ETOOBIG) {
        char why[64];
        snprintf(why, sizeof(why), "too many keys (max %u)", conn_ctx(c)->conf->max_keys);
        conn_client_error(c, why);
        if (cmd.type == OC_CMD_MS) { /* its data block: skipped, not run */
            c->swallow_left = cmd.data_len + 2;
            conn_set_state(c, OC_CONN_SWALLOW);
        }
        return;
    }
    /* meta's q drops only the nominal reply (conn_fmt), binary has its own.
     * A classic line's noreply, where the parser found it in a place
     * memcached reads it (oc_proto), drops the line's error too, as
     * memcached's does: `set K x 0 2 noreply` is silent there. */
    c->quiet =
        cmd.noreply && (cmd.type == OC_CMD_SET || cmd.type == OC_CMD_DELETE ||
                        cmd.type == OC_CMD_STORAGE || cmd.type == OC_CMD_UNSUPPORTED);
    if (st != OC_OK) {
        conn_client_error(c, err);
        if (cmd.type == OC_CMD_MS) { /* a bad flag on a known length: skip the data */
            c->swallow_left = cmd.data_len + 2;
            conn_set_state(c, OC_CONN_SWALLOW);
        }
        return;
    }
    switch (cmd.type) {
    case OC_CMD_GET:
    case OC_CMD_GETS:
    case OC_CMD_MG:
        cmd_get(c, &cmd);
        break;
    case OC_CMD_SET:
    case OC_CMD_MS:
        cmd_set(c, &cmd);
        break;
    case OC_CMD_DELETE:
    case OC_CMD_MD:
        cmd_delete(c, &cmd);
        break;
    case OC_CMD_MN:
        oc_reply_text(c->out, "MN");
        break;
    case OC_CMD_VERSION:
        oc_reply_text(c->out, "VERSION " OC_VERSION);
        break;
    case OC_CMD_QUIT:
        conn_set_state(c, OC_CONN_CLOSING);
        break;
    case OC_CMD_STATS:
        cmd_stats(c, &cmd);
        break;
    case OC_CMD_STORAGE:
        /* Skip the data block so the next command is read in step. */
        c->swallow_left = cmd.data_len + 2;
        conn_set_state(c, OC_CONN_SWALLOW);
        conn_server_error(c, "not supported");
        break;
    case OC_CMD_UNSUPPORTED:
        conn_server_error(c, "not supported");
        break;
    case OC_CMD_UNKNOWN:
        conn_count(c, oc_reply_error(c->out));
        break;
    }
}

/* Drop input being swallowed; returns 1 when done swallowing. */
static int conn_swallow(oc_conn_t *c, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in);
    if (c->swallow_left > 0) {
        size_t n = have < c->swallow_left ? have : (size_t)c->swallow_left;
        evbuffer_drain(in, n);
        c->swallow_left -= n;
        if (c->swallow_left > 0)
            return 0;
        conn_set_state(c, OC_CONN_READING);
        return 1;
    }
    /* An over-long line: drop through its end. */
    struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);
    if (p.pos < 0) {
        evbuffer_drain(in, have);
        return 0;
    }
    evbuffer_drain(in, (size_t)p.pos + 1);
    conn_set_state(c, OC_CONN_READING);
    return 1;
}

/* Write what the output holds; what would block waits for EV_WRITE (and
 * write_timeout). Returns -1 if the connection failed. */
static int conn_flush(oc_conn_t *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uint32_t ms = conn_ctx(c)->conf->write_timeout_ms;
            struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
            /* Armed once per stall: re-arming it on every call (each read
             * of a client that trickles bytes in without reading its
             * replies) would put the deadline off for ever. conn_write_cb
             * re-arms it after progress. */
            if (!event_pending(c->ev_write, EV_WRITE, NULL))
                event_add(c->ev_write, ms ? &tv : NULL);
            return 0;
        }
        return -1;
    }
    return 0;
}

/* Find and run the next command line; 0 when there is none yet. */
static int conn_next_line(oc_conn_t *c, struct evbuffer *in)
{
    size_t max_line = conn_ctx(c)->conf->max_line;
    /* A new line: no noreply yet (one that is too long is answered: its
     * noreply cannot be read; conn_command says where one holds). */
    c->quiet = 0;
    /* Search only the bytes not searched before (slow writers). */
    struct evbuffer_ptr start;
    evbuffer_ptr_set(in, &start, c->scanned, EVBUFFER_PTR_SET);
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, &start, &eol_len, EVBUFFER_EOL_LF);
    size_t have = evbuffer_get_length(in);
    if (eol.pos < 0) {
        c->scanned = have;
        if (have <= max_line + 1) /* max_line, and maybe the CR of its CRLF */
            return 0;
        conn_client_error(c, "line too long");
        c->swallow_left = 0;
        c->scanned = 0;
        conn_set_state(c, OC_CONN_SWALLOW);
        return 1;
    }
    size_t len = (size_t)eol.pos;
    c->scanned = 0;
    size_t content = len;      /* without the CR of a CRLF */
    if (len == max_line + 1) { /* over by one: fine if that one is a CR */
        char last = 0;
        struct evbuffer_ptr at;
        evbuffer_ptr_set(in, &at, len - 1, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &at, &last, 1);
        content -= last == '\r';
    }
    if (content > max_line) {
        conn_client_error(c, "line too long");
        evbuffer_drain(in, len + eol_len);
        return 1;
    }
    /* A line that spans chains is copied into one: that can fail (a line
     * of up to max_line). Refused then, as a data block is (conn_push),
     * and the next line is read in step. */
    char *line = oc_gate_oom(conn_ctx(c)->gate, "conn_line")
                     ? NULL
                     : (char *)evbuffer_pullup(in, (ev_ssize_t)(len + eol_len));
    if (line == NULL) {
        conn_server_error(c, "out of memory");
        evbuffer_drain(in, len + eol_len);
        return 1;
    }
    if (len > 0 && line[len - 1] == '\r')
        len--;
    conn_command(c, line, len);
    /* The command copied what it needs; the line can go. */
    evbuffer_drain(in, (size_t)eol.pos + eol_len);
    return 1;
}

/* Run a text connection's commands; -1 if the connection failed. */
static int conn_run_text(oc_conn_t *c)
{
    struct evbuffer *in = c->in;
    struct evbuffer *out = c->out;
    for (;;) {
        if (c->state == OC_CONN_SWALLOW && !conn_swallow(c, in))
            break;
        if (c->state == OC_CONN_DATA) {
            if (evbuffer_get_length(in) < c->data_len + 2)
                break;
            conn_push(c, in);
            continue;
        }
        if (c->state == OC_CONN_READING && c->cs->drained) {
            conn_drain_stop(c); /* draining: no new commands */
            break;
        }
        if (c->state != OC_CONN_READING)
            break;
        if (evbuffer_get_length(out) > OC_CONN_OUT_HIGH) {
            /* Output over the mark: write what can be written, and go on
             * at once if that brought it under. Else EV_WRITE resumes; no
             * event would if it all went out here (reading may be off). */
            if (conn_flush(c) != 0)
                return -1;
            if (evbuffer_get_length(out) > OC_CONN_OUT_HIGH)
                break;
        }
        if (!conn_next_line(c, in))
            break;
    }
    return 0;
}

/* A binary connection's batch or write was answered: go on. */
static void conn_bin_resume(void *arg)
{
    oc_conn_t *c = arg;
    conn_set_state(c, OC_CONN_READING);
    conn_process(c);
}

/* memcached decides once per connection, from its first byte: the binary
 * request magic makes it a binary connection for good (oc_binconn); any
 * other byte, a text one (a 0x80 later is just a bad line). */
static void conn_detect(oc_conn_t *c)
{
    unsigned char first;
    if (c->detected || evbuffer_copyout(c->in, &first, 1) != 1)
        return;
    c->detected = 1;
    if (first != OC_BIN_MAGIC_REQ)
        return;
    c->bin = oc_binconn_new(conn_ctx(c), c->out, conn_bin_resume, c);
    if (c->bin == NULL) {
        oc_log_error("event=oom where=conn_binary");
        conn_set_state(c, OC_CONN_CLOSING);
    }
}

/* Run a binary connection's requests; -1 if the connection failed. */
static int conn_run_binary(oc_conn_t *c)
{
    while (c->state == OC_CONN_READING) {
        if (c->cs->drained) {
            conn_drain_stop(c); /* draining: no new commands */
            break;
        }
        oc_binconn_state_t st = oc_binconn_process(c->bin, c->in, OC_CONN_OUT_HIGH);
        if (st == OC_BINCONN_BUSY)
            conn_set_state(c, OC_CONN_WAITING);
        else if (st == OC_BINCONN_CLOSE)
            conn_set_state(c, OC_CONN_CLOSING);
        if (st != OC_BINCONN_FULL)
            break;
        /* Output over the mark: write what can be written, and go on at
         * once if that brought it under (else EV_WRITE resumes). */
        if (conn_flush(c) != 0)
            return -1;
        if (evbuffer_get_length(c->out) > OC_CONN_OUT_HIGH)
            break;
    }
    return 0;
}

/* The client shut its side (`printf 'get k\r\n' | nc -N`): like memcached,
 * answer every command it sent before that, then close. Once no command
 * is under way and the output is under its mark, whatever input is left is
 * a command cut short that can never be completed. */
static void conn_eof_check(oc_conn_t *c)
{
    if (c->eof && c->state != OC_CONN_WAITING && c->state != OC_CONN_CLOSING &&
        evbuffer_get_length(c->out) <= OC_CONN_OUT_HIGH)
        conn_set_state(c, OC_CONN_CLOSING);
}

static void conn_process(oc_conn_t *c)
{
    struct evbuffer *in = c->in;
    struct evbuffer *out = c->out;
    conn_detect(c);
    if ((c->bin == NULL ? conn_run_text(c) : conn_run_binary(c)) != 0) {
        conn_free(c);
        return;
    }
    conn_eof_check(c);
    if (conn_flush(c) != 0) {
        conn_free(c);
        return;
    }
    if (c->state == OC_CONN_CLOSING && evbuffer_get_length(out) == 0) {
        if (c->handover)
            conn_hand_over(c);
        conn_free(c);
        return;
    }
    /* Reading stays on while a get runs (turning it off and on again
     * costs two epoll_ctl per request); backpressure stops it when the
     * output backs up or too much input waits. */
    conn_set_reading(c, c->state != OC_CONN_CLOSING && !c->eof &&
                            evbuffer_get_length(out) <= OC_CONN_OUT_HIGH &&
                            evbuffer_get_length(in) <= conn_in_cap(c));
}

static void conn_arm_idle(oc_conn_t *c)
{
    uint32_t ms = conn_ctx(c)->conf->idle_timeout_ms;
    if (c->ev_idle == NULL || ms == 0)
        return;
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->ev_idle, &tv);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    oc_conn_t *c = arg;
    /* Small reads first: most commands are a few hundred bytes, and with
     * 10,000 connections a large buffer each would fragment the heap. */
    size_t want = 4096;
    for (int rounds = 0; rounds < 4; rounds++, want = 65536) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, (ev_ssize_t)want, &v, 1) < 1) {
            oc_log_error("event=oom where=conn_read");
            conn_free(c);
            return;
        }
        ssize_t n = recv(fd, v.iov_base, v.iov_len, 0);
        if (n > 0) {
            size_t room = v.iov_len;
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->in, &v, 1);
            if ((size_t)n < room)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            conn_free(c); /* the connection failed: nobody to answer */
            return;
        }
        c->eof = 1; /* shut for writing: what it sent is still answered */
        conn_set_reading(c, 0);
        break;
    }
    conn_arm_idle(c);
    conn_process(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    oc_conn_t *c = arg;
    /* No progress for write_timeout: unless the client read meanwhile and
     * this sidecar stood still itself (stopped, starved of CPU), so that the
     * timer is due with the socket writable (what carries both, or the
     * readiness is not reported in this turn: after a stop epoll_wait
     * fails with EINTR): what can be written now is progress (before
     * 2026-12-07 such a client was cut off mid-reply). */
    if ((what & EV_TIMEOUT) && !(what & EV_WRITE) && evbuffer_write(c->out, fd) <= 0) {
        conn_ctx(c)->stats->timeouts++;
        oc_log_debug("event=client_timeout what=write");
        conn_free(c);
        return;
    }
    /* Output drained (or some of it): close after quit, or resume. */
    conn_process(c);
}

static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_conn_t *c = arg;
    if (conn_ctx(c)->conf->idle_timeout_ms == 0)
        return; /* a reload turned it off after this timer was armed */
    /* Busy: a command under way (a slow load: the client waits for us), or
     * replies waiting (write_timeout's business). A command cut short, a
     * data block that stopped coming or input being swallowed is not: the
     * client has sent nothing for idle_timeout (each read re-arms this), and
     * a client that stalls mid-command must not hold its connection (and a
     * slot of max_connections) for ever. */
    if (c->state == OC_CONN_WAITING || evbuffer_get_length(c->out) > 0) {
        conn_arm_idle(c);
        return;
    }
    /* Bytes waiting unread: the client did send; this sidecar stood still
     * (stopped, starved of CPU) and its timer runs before the read (after a
     * stop epoll_wait fails with EINTR, so no socket is reported in that
     * turn; under load more may be ready than one epoll_wait returns).
     * Before 2026-12-07 such clients were cut off, their commands unanswered. */
    char b;
    if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
        conn_arm_idle(c);
        return;
    }
    conn_ctx(c)->stats->timeouts++;
    oc_log_debug("event=client_timeout what=idle");
    conn_free(c);
}

/* A reply bigger than one write goes out in pieces; with Nagle the last
 * short piece waits for the client's delayed ACK (40 ms on Linux), so a
 * large multi-get would take 40 ms over TCP. Unix sockets refuse the option. */
static void conn_nodelay(evutil_socket_t fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static oc_conn_t *conn_new(oc_conns_t *cs, evutil_socket_t fd)
{
    oc_ctx_t *ctx = cs->ctx;
    oc_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->cs = cs;
    c->fd = fd;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->ev_read = event_new(ctx->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    c->ev_write = event_new(ctx->base, fd, EV_WRITE, conn_write_cb, c);
    if (ctx->conf->idle_timeout_ms)
        c->ev_idle = evtimer_new(ctx->base, conn_idle_cb, c);
    if (c->in == NULL || c->out == NULL || c->ev_read == NULL || c->ev_write == NULL ||
        (ctx->conf->idle_timeout_ms && c->ev_idle == NULL)) {
        c->fd = -1; /* the caller closes it */
        conn_release(c);
        return NULL;
    }
    return c;
}

/* A new connection (accepted or adopted) joins the list and reads. */
static void conn_link(oc_conns_t *cs, oc_conn_t *c)
{
    conn_nodelay(c->fd);
    c->state = OC_CONN_READING;
    c->next = cs->head;
    if (cs->head)
        cs->head->prev = c;
    cs->head = c;
    cs->count++;
    cs->ctx->stats->curr_connections = cs->count;
    /* idle_timeout: clients that send nothing; write_timeout (conn_flush):
     * clients that stop reading their replies (their output is capped,
     * then they go). */
    conn_arm_idle(c);
    conn_set_reading(c, 1);
}

void oc_conn_accept(oc_conns_t *cs, evutil_socket_t fd)
{
    oc_ctx_t *ctx = cs->ctx;
    if (cs->count >= ctx->conf->max_connections || cs->drained) {
        static const char msg[] = "SERVER_ERROR too many connections\r\n";
        ssize_t w = write(fd, msg, sizeof(msg) - 1);
        (void)w; /* best effort: the client is being turned away anyway */
        evutil_closesocket(fd);
        ctx->stats->rejected_connections++;
        return;
    }
    oc_conn_t *c = evutil_make_socket_nonblocking(fd) == 0 ? conn_new(cs, fd) : NULL;
    if (c == NULL) {
        oc_log_error("event=oom where=conn_accept");
        evutil_closesocket(fd);
        return;
    }
    conn_link(cs, c);
    ctx->stats->total_connections++;
}

int oc_conn_adopt(oc_conns_t *cs, evutil_socket_t fd)
{
    /* No SERVER_ERROR line over the limit: the client sent no command to
     * answer, and would read it as its next command's reply. */
    oc_conn_t *c = cs->count < cs->ctx->conf->max_connections && !cs->drained
                       ? conn_new(cs, fd)
                       : NULL;
    if (c == NULL) {
        evutil_closesocket(fd);
        return -1;
    }
    conn_link(cs, c);
    return 0;
}

oc_conns_t *oc_conns_new(oc_ctx_t *ctx, char *err)
{
    oc_conns_t *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    cs->ctx = ctx;
    return cs;
}

void oc_conns_drain(oc_conns_t *cs, void (*drained)(void *arg), void *arg)
{
    cs->drained = drained;
    cs->drained_arg = arg;
    cs->handover = cs->ctx->conf->restart_handover && oc_sd_enabled();
    if (cs->head == NULL) {
        drained(arg);
        return;
    }
    oc_conn_t *next;
    for (oc_conn_t *c = cs->head; c != NULL; c = next) {
        next = c->next;
        if (c->state != OC_CONN_WAITING)
            conn_process(c); /* closes it, or lets it finish its output */
    }
}

uint64_t oc_conns_count(const oc_conns_t *cs)
{
    return cs->count;
}

int oc_conns_handover(const oc_conns_t *cs, uint64_t *handed, uint64_t *closed)
{
    *handed = cs->handed;
    *closed = cs->closed;
    return cs->handover;
}

void oc_conns_free(oc_conns_t *cs)
{
    if (cs == NULL)
        return;
    cs->drained = NULL; /* closing them all now is not a drain */
    oc_conn_t *next;
    for (oc_conn_t *c = cs->head; c != NULL; c = next) {
        next = c->next;
        conn_free(c);
    }
    free(cs->tokens);
    free(cs);
}
