/*
 * oc_proto: the memcached ASCII protocol, as far as parsing one command line.
 *
 * Contract: pure, allocation-free, never reads outside [line, line+len). The
 * caller finds the line (without its "\r\n" or "\n"), owns the token array,
 * and keeps `line` alive while it uses the tokens, which point into it.
 * Replies are written by the connection code; this module only classifies.
 */
#ifndef OC_PROTO_H
#define OC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "oc_status.h"

typedef struct oc_token {
    const char *p;
    size_t len;
} oc_token_t;

typedef enum oc_cmd_type {
    OC_CMD_GET,         /* get <key>+ */
    OC_CMD_GETS,        /* gets <key>+ */
    OC_CMD_VERSION,
    OC_CMD_QUIT,
    OC_CMD_STATS,       /* stats [arg] */
    OC_CMD_SET,         /* set <key> <flags> <exptime> <bytes> [noreply] + data */
    OC_CMD_STORAGE,     /* add/replace/append/prepend/cas: has a data block */
    OC_CMD_DELETE,      /* delete <key> [0] [noreply] */
    OC_CMD_UNSUPPORTED, /* a memcached command objcached does not serve yet */
    OC_CMD_UNKNOWN,     /* not a memcached command: reply ERROR */
} oc_cmd_type_t;

typedef struct oc_cmd {
    oc_cmd_type_t type;
    const oc_token_t *keys; /* GET/GETS: the keys; STATS: the argument(s) */
    size_t nkeys;
    uint64_t data_len;      /* SET/STORAGE: bytes in the data block (no \r\n) */
    int noreply;            /* the last token was "noreply" */
} oc_cmd_t;

/*
 * Split `line` into at most `maxtok` tokens and classify it.
 * Returns:
 *   OC_OK      cmd is filled;
 *   OC_ETOOBIG more than maxtok tokens (for a get: too many keys);
 *   OC_EINVAL  a known command with malformed arguments; err has the
 *              client-facing reason ("bad command line format",
 *              "bad data chunk"). For SET/STORAGE with a bad length the
 *              data block cannot be skipped, exactly as with memcached.
 * An empty line or an unknown command is OC_OK with type OC_CMD_UNKNOWN.
 */
oc_status_t oc_proto_parse(const char *line, size_t len, oc_token_t *tok,
                           size_t maxtok, oc_cmd_t *cmd, char *err);

#endif
