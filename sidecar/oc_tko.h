/*
 * oc_tko: whether one memcached server is in service, after mcrouter's
 * TKO ("technical knock-out"). oc_mc reports what happens on the server's
 * connection (a failure: refused, reset, timed out, a reply it cannot
 * read; a success: any reply) and asks whether requests may go to it; a
 * server marked down gets no requests at all (they go to the failover, or
 * fail at once), only a probe every retry_s, and is taken back only when
 * that probe passes (it answered, and oc_mc made it safe: flush_all).
 *
 *            failure, the limit-th in a row
 *      UP ------------------------------------> DOWN
 *      | ^   failure (fewer): UP, counted       |  ^
 *      | |   success: the count starts again    |  | probe failed
 *      | |                          probe time  v  |
 *      | '-------- probe passed ----------- PROBING
 *
 * Time is passed in (seconds, any monotonic origin above 0): unit tests
 * move the clock without sleeping.
 *
 * Contract: pure functions over a caller-owned oc_tko_t; no I/O, no
 * allocation.
 */
#ifndef OC_TKO_H
#define OC_TKO_H

#include <stdint.h>

typedef enum oc_tko_state {
    OC_TKO_UP = 0, /* in service */
    OC_TKO_DOWN,   /* ejected: waiting for its next probe */
    OC_TKO_PROBING /* ejected: a probe is under way */
} oc_tko_state_t;

typedef struct oc_tko_rules {
    uint32_t failure_limit; /* consecutive failures that eject it (>= 1) */
    double retry_s;         /* DOWN: the wait before each probe */
} oc_tko_rules_t;

typedef struct oc_tko {
    oc_tko_state_t state;
    uint32_t failures; /* UP: consecutive failures so far */
    double since;      /* when the state began */
    double probe_at;   /* DOWN: when the next probe is due */
    double down_at;    /* when it was last ejected */
    double back_at;    /* when it last came back (0: it never went down) */
    uint64_t ejections;
} oc_tko_t;

/* A server nobody has seen fail: UP. */
void oc_tko_init(oc_tko_t *t, double now);

/* A failure. Returns 1 if the state changed (UP -> DOWN: ejected;
 * PROBING -> DOWN: the probe failed), 0 if not (a failure under the limit,
 * or one while DOWN). Each time it becomes DOWN its next probe is due
 * retry_s later. */
int oc_tko_failure(oc_tko_t *t, const oc_tko_rules_t *r, double now);

/* A reply: the count of failures starts again (any state; only UP counts). */
void oc_tko_success(oc_tko_t *t);

/* Seconds until the probe of a DOWN server is due (0: now); -1 if it is
 * not DOWN. */
double oc_tko_probe_wait(const oc_tko_t *t, double now);

/* DOWN and its probe is due: PROBING, returns 1 (the caller probes). */
int oc_tko_probe(oc_tko_t *t, double now);

/* PROBING and the probe passed: UP (back_at = now), returns 1. */
int oc_tko_passed(oc_tko_t *t, double now);

/* May requests go to it? */
static inline int oc_tko_in_service(const oc_tko_t *t)
{
    return t->state == OC_TKO_UP;
}

/* In service but not for long (it came back less than `window` seconds
 * ago), or failing without being ejected yet: the failover may still hold
 * copies of its keys that a write must clear. */
int oc_tko_recent(const oc_tko_t *t, double now, double window);

/* "up", "down", "probing". */
const char *oc_tko_state_name(oc_tko_state_t s);

#endif
