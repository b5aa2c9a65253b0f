/*
 * oc_gate: test-only fault points, read from the environment at start, so
 * integration tests can put a real daemon into states that are otherwise
 * a matter of timing or luck. objcached logs a warning at start for each
 * one set. Never set in production.
 *
 *   OBJCACHED_FAULT_FILL_GATE=PATH  every write-back (between the PostgreSQL
 *       read and the cache write: fills and push checks) is held while PATH
 *       exists, so a test can land a write in exactly that window.
 *   OBJCACHED_FAULT_OOM=WHERE[,WHERE]  the allocation at WHERE fails, as if
 *       out of memory: match_rows (matching a load's rows to its ids),
 *       reply_ref (adding a get's value to the client's output by reference,
 *       and its fallback copy: the reply is cut short), conn_line (making a
 *       client's command line contiguous: the command is refused).
 *   OBJCACHED_FAULT_NO_HEALTH_PROBE=1  the health probe of the memcached
 *       servers in service (oc_health, every 2 s) never runs, so a test
 *       that counts a server's failures is not raced by one (a probe that
 *       lands in the milliseconds of a restart is a failure more). Servers
 *       out of service are still probed by oc_mc.
 *
 * Contract: oc_gate_new returns NULL when none is set, and the functions
 * accept a NULL gate (nothing is ever held or failed). The caller owns
 * *timer and frees it.
 */
#ifndef OC_GATE_H
#define OC_GATE_H

#include <event2/event.h>

typedef struct oc_gate oc_gate_t;

oc_gate_t *oc_gate_new(struct event_base *base);
void oc_gate_free(oc_gate_t *g);

/* 1 if the fill gate is closed now: then cb(arg) runs again in 10 ms on
 * *timer (created on first use); 0 if the write-back may go on. */
int oc_gate_hold(oc_gate_t *g, struct event **timer, event_callback_fn cb, void *arg);

/* 1 if the allocation at `where` is to fail. */
int oc_gate_oom(const oc_gate_t *g, const char *where);

/* 1 if the health probe of servers in service is off. */
int oc_gate_no_health_probe(const oc_gate_t *g);

/* ---- the pure rules, exposed for unit tests ---- */

/* 1 if `where` is one of the items of list, ",a,b," (OBJCACHED_FAULT_OOM's
 * value between commas): whole items only; an empty `where` never. */
int oc_gate_listed(const char *list, const char *where);

#endif
