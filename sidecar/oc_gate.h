/*
 * oc_gate: a test-only fault point. With OBJCACHED_FAULT_FILL_GATE=PATH in
 * the environment at start, every write-back (between the PostgreSQL read
 * and the cache write: fills and push checks) is held while PATH exists, so
 * an integration test can land a write in exactly that window. Never set in
 * production; objcached logs a warning at start when it is.
 *
 * Contract: oc_gate_new returns NULL when the variable is not set (and
 * oc_gate_hold(NULL, ...) never holds). The caller owns *timer and frees it.
 */
#ifndef OC_GATE_H
#define OC_GATE_H

#include <event2/event.h>

struct event_base;
struct event;
typedef struct oc_gate oc_gate_t;

oc_gate_t *oc_gate_new(struct event_base *base);
void oc_gate_free(oc_gate_t *g);

/* 1 if the gate is closed now: then cb(arg) runs again in 10 ms on *timer
 * (created on first use); 0 if the write-back may go on. */
int oc_gate_hold(oc_gate_t *g, struct event **timer, event_callback_fn cb, void *arg);

#endif
