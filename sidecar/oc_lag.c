#include "oc_lag.h"

#include <event2/event.h>
#include <stdlib.h>

#include "oc_log.h"
#include "oc_stats.h"

struct oc_lag {
    oc_ctx_t *ctx;
    struct event *tick;
    double due; /* monotonic seconds the armed tick is due at; 0: the
                   first turn's, which only starts the measure */
};

double oc_lag_late(double due, double now)
{
    return now > due ? now - due : 0;
}

static void arm(oc_lag_t *l)
{
    /* libevent counts the delay from the turn's cached time, which is
     * stale after a long turn: refresh it so its deadline and ours agree. */
    event_base_update_cache_time(l->ctx->base);
    l->due = oc_stats_now() + OC_LAG_TICK_MS / 1000.0;
    struct timeval tv = {0, OC_LAG_TICK_MS * 1000};
    evtimer_add(l->tick, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    oc_lag_t *l = arg;
    oc_stats_t *st = l->ctx->stats;
    if (l->due == 0) {
        arm(l);
        return;
    }
    double late = oc_lag_late(l->due, oc_stats_now());
    oc_hist_observe(&st->loop_lag_seconds, late);
    if (late * 1000 >= OC_LAG_STALL_MS) {
        st->loop_stalls++;
        st->loop_stall_us += (uint64_t)(late * 1e6);
        oc_log_warn("event=loop_stalled seconds=%.2f reason=\"the process was stopped, "
                    "starved of CPU or ran one long turn\"",
                    late);
    }
    arm(l);
}

oc_lag_t *oc_lag_new(oc_ctx_t *ctx, char *err)
{
    oc_lag_t *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->tick = evtimer_new(ctx->base, on_tick, l)) == NULL) {
        free(l);
        return oc_fail(err, OC_ENOMEM, "out of memory"), NULL;
    }
    l->ctx = ctx;
    /* Measured from the loop's first turn: the start's blocking work (the
     * generations read waits up to 4 s for PostgreSQL) is no stall. */
    struct timeval now = {0, 0};
    evtimer_add(l->tick, &now);
    return l;
}

void oc_lag_free(oc_lag_t *l)
{
    if (l == NULL)
        return;
    event_free(l->tick);
    free(l);
}
