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
    OC_CMD_GET,  /* get <key>+ */
    OC_CMD_GETS, /* gets <key>+ */
    OC_CMD_VERSION,
    OC_CMD_QUIT,
    OC_CMD_STATS,       /* stats [arg] */
    OC_CMD_SET,         /* set <key> <flags> <exptime> <bytes> [noreply] + data */
    OC_CMD_STORAGE,     /* add/replace/append/prepend/cas: has a data block */
    OC_CMD_DELETE,      /* delete <key> [0] [noreply] */
    OC_CMD_MG,          /* mg <key> <flags>*: meta get */
    OC_CMD_MS,          /* ms <key> <datalen> <flags>* + data: meta set (push) */
    OC_CMD_MD,          /* md <key> <flags>*: meta delete (tombstone) */
    OC_CMD_MN,          /* mn: meta no-op, answers MN */
    OC_CMD_UNSUPPORTED, /* a memcached command objcached does not serve yet */
    OC_CMD_UNKNOWN,     /* not a memcached command: reply ERROR */
} oc_cmd_type_t;

/* Meta command flags (memcached's doc/protocol.txt, "Meta Commands"). */
#define OC_META_V (1u << 0) /* mg: return the value */
#define OC_META_F (1u << 1) /* return client flags (always 0) */
#define OC_META_K (1u << 2) /* return the key */
#define OC_META_S (1u << 3) /* mg: return the value's size */
#define OC_META_C (1u << 4) /* mg: return the cas */
#define OC_META_T (1u << 5) /* mg: return the remaining TTL (-1: unknown) */
#define OC_META_Q (1u << 6) /* quiet: no EN (mg) / HD (ms, md) reply */
#define OC_META_B (1u << 7) /* the key is base64 */
#define OC_META_O (1u << 8) /* return the opaque token */
#define OC_META_N (1u << 9) /* mg: return n1 if the near-cache answered, else n0 */

typedef struct oc_meta {
    unsigned flags;    /* OC_META_* */
    oc_token_t opaque; /* O<token>, without the O */
} oc_meta_t;

typedef struct oc_cmd {
    oc_cmd_type_t type;
    oc_meta_t meta;         /* MG/MS/MD */
    const oc_token_t *keys; /* GET/GETS: the keys; STATS: the argument(s) */
    size_t nkeys;
    uint64_t data_len; /* SET/STORAGE/MS: bytes in the data block (no \r\n) */
    int noreply;       /* the last token was "noreply" (an unsupported command:
                        * only where memcached takes it) */
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
 * Meta commands: unknown flags are OC_EINVAL ("invalid flag"); `ms` modes
 * other than set (M S) are OC_EINVAL ("mode not supported") after the data
 * length is known, so the caller can skip the data block (data_len is set).
 */
oc_status_t oc_proto_parse(const char *line, size_t len, oc_token_t *tok, size_t maxtok,
                           oc_cmd_t *cmd, char *err);

/* Decode base64 `in` into out (cap bytes). Returns the length, or -1 if
 * `in` is not base64 or does not fit. */
long oc_proto_base64_decode(const char *in, size_t len, char *out, size_t cap);

#endif
