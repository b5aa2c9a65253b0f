/*
 * oc_lag: how late the event loop runs its timers. Every 100 ms a timer
 * notes how late it fired against a fresh clock: every lateness goes to
 * the loop_lag_seconds histogram (the metrics page), and one of 1 s or
 * more is a stall: counted (loop_stalls, loop_stall_us) and logged
 * (event=loop_stalled). A loop stands still when the process is stopped
 * (SIGSTOP, a debugger), starved of CPU on a busy host, or runs one long
 * turn; its timeouts then fall due while their answers wait unread. The
 * modules read what waits before they call a peer silent (oc_mc_conn,
 * oc_conn, oc_pgconn); this is how an operator tells a sidecar that stood
 * still from a memcached or PostgreSQL that was slow.
 *
 * Why a timer of its own: libevent 2.1 has no hook around a loop turn, so
 * lateness is sampled: a stall shows in the tick that falls due inside
 * it, so one shorter than the tick's 100 ms may pass unseen, and a stall
 * is measured from that tick's due time (at most 100 ms short). Ten
 * wake-ups a second: an idle daemon's CPU went from 1 to 2 ms a second
 * here (20 s idle, /proc, 10 ms ticks: coarse), 0.1% of a core.
 *
 * The measure starts at the loop's first turn, so the start's own blocking
 * work (a slow PostgreSQL) is not a stall.
 *
 * Ownership: the daemon owns it (oc_lag_new after ctx->base and
 * ctx->stats; oc_lag_free before the base). It writes only its stats.
 */
#ifndef OC_LAG_H
#define OC_LAG_H

#include "oc_ctx.h"
#include "oc_status.h"

#define OC_LAG_TICK_MS  100
#define OC_LAG_STALL_MS 1000 /* a tick this late or later is a stall */

typedef struct oc_lag oc_lag_t;

oc_lag_t *oc_lag_new(oc_ctx_t *ctx, char *err);
void oc_lag_free(oc_lag_t *l);

/* ---- the pure rule, exposed for unit tests ---- */

/* A tick due at `due` that fired at `now` (monotonic seconds): its
 * lateness in seconds, never below 0 (libevent may fire a timer a little
 * early against a fresher clock). */
double oc_lag_late(double due, double now);

#endif
