/*
 * objcache.h: libobjcache, the C client of objcached.
 *
 * objcached is a read-through object cache: keys are `Model:id`, values are
 * the row as JSON. It speaks the memcached ASCII protocol over a unix socket
 * or loopback TCP; this library speaks the part of it objcached answers.
 *
 * Handles. An objcache_t is one connection to one objcached address. It is
 * made by objcache_new(), which only parses the address: the connection is
 * opened by the first call that needs it (or by objcache_connect()).
 *
 * Threads. A handle is NOT thread-safe: use one handle per thread, or borrow
 * handles from an objcache_pool_t (below), which is. The library has no
 * global state, installs no signal handlers and never raises SIGPIPE (it
 * sends with MSG_NOSIGNAL), so distinct handles may be used concurrently.
 *
 * Time. Every call is bounded: connecting by connect_timeout_ms, and the whole
 * exchange (sending the request and reading the complete reply) by
 * io_timeout_ms. Sockets are non-blocking and waited on with poll().
 *
 * Failures. Every function that can fail returns an objcache_status_t
 * (OBJCACHE_OK is 0). objcache_strerror() names a status; objcache_errmsg()
 * gives the last call's detail, and when the server refused a request it is
 * the server's own line ("SERVER_ERROR not supported").
 *   - A server answer (CLIENT_ERROR, SERVER_ERROR, ERROR, NOT_FOUND,
 *     NOT_STORED) leaves the connection open and in step.
 *   - A broken connection (OBJCACHE_EIO), a timeout (OBJCACHE_ETIMEOUT), a
 *     malformed or oversized reply (OBJCACHE_EPROTO, OBJCACHE_ETOOBIG) close
 *     it, because the reply stream can no longer be trusted. The handle stays
 *     usable: the next call connects again.
 *   - Before reusing an idle connection, a call checks that the server has not
 *     closed it meanwhile (a restart, an idle timeout) and reconnects if so.
 *     A request is never sent twice.
 *
 * Ownership, in one place:
 *   - Strings passed in (addresses, keys, JSON) are only read during the call.
 *   - Everything a call hands back (values, stat names and values, the
 *     version, objcache_errmsg()) points into memory owned by the handle and
 *     stays valid until the next call on that handle (any objcache_* function
 *     taking it, except objcache_errmsg()) or objcache_free(). Copy what you
 *     keep. Returned strings are NUL-terminated; a value also has its length.
 *   - Result arrays for objcache_get_multi() are the caller's.
 *
 * Memory. Replies are read into one buffer per handle that grows to the
 * largest call's replies seen (a get_multi of several get commands keeps them
 * all), capped by max_reply_bytes (replies that would be bigger fail with
 * OBJCACHE_ETOOBIG before anything that large is allocated). If an allocation
 * fails the call returns OBJCACHE_ENOMEM (and, if a reply was being read,
 * closes the connection); nothing aborts.
 */
#ifndef OBJCACHE_H
#define OBJCACHE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(OBJCACHE_BUILDING)
#define OBJCACHE_API __attribute__((visibility("default")))
#else
#define OBJCACHE_API
#endif

#define OBJCACHE_VERSION_MAJOR 0
#define OBJCACHE_VERSION_MINOR 1
#define OBJCACHE_VERSION_PATCH 0

/* Bytes in the err buffers of objcache_new() and objcache_pool_new(). */
#define OBJCACHE_ERRLEN 256

/* The longest key a memcached server accepts; objcached may accept fewer. */
#define OBJCACHE_KEY_MAX  250
#define OBJCACHE_LINE_MAX (16 * 1024 * 1024) /* max_line_bytes' upper bound */

typedef enum objcache_status {
    OBJCACHE_OK = 0,    /* done; for a key: found */
    OBJCACHE_NOT_FOUND, /* get: the object does not exist; tombstone: nothing to delete */
    OBJCACHE_NOT_STORED, /* push: something that must win is cached (a tombstone, a newer
                            version) */
    OBJCACHE_EXISTS,   /* push: EXISTS (memcached's cas conflict; objcached does not send
                          it) */
    OBJCACHE_EINVAL,   /* a bad argument: address, key, option */
    OBJCACHE_ENOMEM,   /* an allocation failed */
    OBJCACHE_ECONNECT, /* could not connect (refused, no socket, unknown host) */
    OBJCACHE_EIO,      /* the connection failed or the server closed it mid-call */
    OBJCACHE_ETIMEOUT, /* connect_timeout_ms or io_timeout_ms expired */
    OBJCACHE_EPROTO,   /* the server's reply is not valid protocol */
    OBJCACHE_ETOOBIG,  /* the reply is over max_reply_bytes */
    OBJCACHE_ECLIENT,  /* the server answered CLIENT_ERROR: it refused the request */
    OBJCACHE_ESERVER,  /* the server answered SERVER_ERROR: it failed */
    OBJCACHE_ECOMMAND, /* the server answered ERROR: it does not know the command */
    OBJCACHE_STATUS_COUNT
} objcache_status_t;

/* A static, never-NULL description of st ("ok", "not found", "timed out"...). */
OBJCACHE_API const char *objcache_strerror(objcache_status_t st);

typedef struct objcache_options {
    unsigned connect_timeout_ms; /* default 1000 */
    unsigned io_timeout_ms;      /* default 6000: above objcached's load_timeout (5s),
                                    so a slow database shows as the server's own
                                    "SERVER_ERROR load failed", not as a timeout */
    size_t max_reply_bytes;      /* default 64 MiB; at least 1 KiB */
    size_t max_keys_per_get;     /* default 1024 (objcached's max_keys); more keys are
                                    asked with several get commands in one call */
    size_t max_line_bytes;       /* default 65536 (objcached's max_line); a longer
                                    get line is split the same way; at most
                                    OBJCACHE_LINE_MAX */
} objcache_options_t;

/* Fill o with the defaults above. */
OBJCACHE_API void objcache_options_init(objcache_options_t *o);

typedef struct objcache objcache_t;

/*
 * Make a handle for addr:
 *   unix:/path/to.sock    a unix socket (an absolute path alone works too)
 *   host:port             IPv4 address or host name, e.g. 127.0.0.1:11311
 *   [v6addr]:port         IPv6, e.g. [::1]:11311
 * opts may be NULL for the defaults. Does not connect. On success *out is a
 * handle to objcache_free(); on failure *out is NULL, and err (if not NULL,
 * OBJCACHE_ERRLEN bytes) says why. Returns OK, EINVAL or ENOMEM.
 */
OBJCACHE_API objcache_status_t objcache_new(objcache_t **out, const char *addr,
                                            const objcache_options_t *opts, char *err);

/* Close the connection (if any) and free the handle. NULL is a no-op. */
OBJCACHE_API void objcache_free(objcache_t *h);

/* Connect now, if not connected, to find out early whether the server is there. */
OBJCACHE_API objcache_status_t objcache_connect(objcache_t *h);

/* Close the connection; the next call opens a new one. */
OBJCACHE_API void objcache_close(objcache_t *h);

/*
 * The last call's detail: "" after OK (and after a get_multi whose keys were
 * all found or absent), else one line. When the server answered, it is the
 * server's own line ("NOT_STORED", "CLIENT_ERROR value is not a JSON object",
 * "SERVER_ERROR load failed: ..."); otherwise the library's ("connect
 * unix:/x.sock: No such file or directory", "no complete reply within 6000
 * ms"). Owned by h, valid until its next call.
 */
OBJCACHE_API const char *objcache_errmsg(const objcache_t *h);

/*
 * OBJCACHE_OK if key can be sent: `Model:id` with both parts non-empty, at
 * most OBJCACHE_KEY_MAX bytes, no spaces or control characters. Whether the
 * model exists and the id suits it is the server's to say.
 */
OBJCACHE_API objcache_status_t objcache_check_key(const char *key);

/* One key's outcome in objcache_get_multi(). */
typedef struct objcache_item {
    const char *key;          /* keys[i], the caller's pointer */
    objcache_status_t status; /* OK: found; NOT_FOUND: no such object; else why
                                 this key has no answer */
    const char *value;        /* OK: the object's JSON, NUL-terminated (a value
                                 never contains NUL); else NULL. Owned by the
                                 handle: valid until its next call */
    size_t value_len;         /* bytes in value, without the NUL */
} objcache_item_t;

/*
 * Fetch nkeys objects with one exchange (several get commands if more than
 * max_keys_per_get or max_line_bytes). items[nkeys] is the caller's and is
 * always filled, item i for keys[i], whatever is returned.
 *
 * A key that fails objcache_check_key() gets EINVAL and is not sent; the
 * others still are. If the server refuses or fails a get command, or the
 * connection fails, every key sent gets that status. Keys may repeat.
 *
 * Returns OK if every key has status OK or NOT_FOUND; otherwise the status of
 * the first key that has neither (errmsg tells more).
 */
OBJCACHE_API objcache_status_t objcache_get_multi(objcache_t *h, const char *const *keys,
                                                  size_t nkeys, objcache_item_t *items);

/*
 * Fetch one object: OK with *value (NUL-terminated, owned by the handle until
 * its next call) and *value_len, NOT_FOUND, or an error. value_len may be NULL.
 */
OBJCACHE_API objcache_status_t objcache_get(objcache_t *h, const char *key,
                                            const char **value, size_t *value_len);

/*
 * Save an object, after the app's transaction committed: `set <key> 0 0 <len>`
 * with json[0..len) as the data. OK when the server stored it; NOT_STORED when
 * something that must win is cached (objcached: a tombstone, or an object with
 * a newer version_column); ECLIENT when the server refused the body
 * ("CLIENT_ERROR value is not a JSON object"); or an error. The data is sent
 * as given (it is not checked here). The caller keeps json.
 */
OBJCACHE_API objcache_status_t objcache_push(objcache_t *h, const char *key,
                                             const char *json, size_t len);

/*
 * The object was deleted, after the app's transaction committed: `delete
 * <key>`. OK when the server recorded it (objcached stores a tombstone, so
 * reads answer "absent" and no fill under way can bring the object back);
 * NOT_FOUND when a plain memcached had nothing to delete; or an error.
 */
OBJCACHE_API objcache_status_t objcache_tombstone(objcache_t *h, const char *key);

typedef struct objcache_stat {
    const char *name;  /* NUL-terminated, owned by the handle until its next call */
    const char *value; /* NUL-terminated, may contain spaces */
} objcache_stat_t;

/*
 * `stats`: *stats points to *nstats name/value pairs in the server's order,
 * owned by the handle until its next call.
 */
OBJCACHE_API objcache_status_t objcache_stats(objcache_t *h,
                                              const objcache_stat_t **stats,
                                              size_t *nstats);

/* `version`: *version is the server's version text, owned by the handle. */
OBJCACHE_API objcache_status_t objcache_version(objcache_t *h, const char **version);

/*
 * A pool of handles to one address, for threads that share a client.
 * objcache_pool_acquire() hands out an idle handle, or makes a new one when
 * none is idle (it never waits); objcache_pool_release() gives it back, and
 * keeps at most max_idle idle handles (the rest are freed). Pointers a handle
 * returned are valid only while you hold it. Acquire and release are
 * thread-safe; objcache_pool_free() is not, and every handle must have been
 * released before it.
 */
typedef struct objcache_pool objcache_pool_t;

OBJCACHE_API objcache_status_t objcache_pool_new(objcache_pool_t **out, const char *addr,
                                                 const objcache_options_t *opts,
                                                 size_t max_idle, char *err);
OBJCACHE_API objcache_status_t objcache_pool_acquire(objcache_pool_t *p, objcache_t **h);
OBJCACHE_API void objcache_pool_release(objcache_pool_t *p, objcache_t *h);
OBJCACHE_API void objcache_pool_free(objcache_pool_t *p);

#ifdef __cplusplus
}
#endif

#endif
