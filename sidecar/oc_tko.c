#include "oc_tko.h"

static void tko_set(oc_tko_t *t, oc_tko_state_t st, double now)
{
    t->state = st;
    t->since = now;
}

void oc_tko_init(oc_tko_t *t, double now)
{
    *t = (oc_tko_t){.state = OC_TKO_UP, .since = now};
}

static void tko_down(oc_tko_t *t, const oc_tko_rules_t *r, double now)
{
    tko_set(t, OC_TKO_DOWN, now);
    t->failures = 0;
    t->probe_at = now + r->retry_s;
}

int oc_tko_failure(oc_tko_t *t, const oc_tko_rules_t *r, double now)
{
    switch (t->state) {
    case OC_TKO_UP:
        /* A limit of 0 would mean "never in service": read it as 1. */
        if (++t->failures < (r->failure_limit ? r->failure_limit : 1))
            return 0;
        t->ejections++;
        t->down_at = now;
        tko_down(t, r, now);
        return 1;
    case OC_TKO_PROBING:
        tko_down(t, r, now);
        return 1;
    case OC_TKO_DOWN:
        break;
    }
    return 0;
}

void oc_tko_success(oc_tko_t *t)
{
    t->failures = 0;
}

double oc_tko_probe_wait(const oc_tko_t *t, double now)
{
    if (t->state != OC_TKO_DOWN)
        return -1;
    return t->probe_at > now ? t->probe_at - now : 0;
}

int oc_tko_probe(oc_tko_t *t, double now)
{
    if (t->state != OC_TKO_DOWN || now < t->probe_at)
        return 0;
    tko_set(t, OC_TKO_PROBING, now);
    return 1;
}

int oc_tko_passed(oc_tko_t *t, double now)
{
    if (t->state != OC_TKO_PROBING)
        return 0;
    tko_set(t, OC_TKO_UP, now);
    t->failures = 0;
    t->back_at = now;
    return 1;
}

int oc_tko_recent(const oc_tko_t *t, double now, double window)
{
    if (t->state != OC_TKO_UP)
        return 0;
    return t->failures > 0 || (t->back_at > 0 && now - t->back_at < window);
}

const char *oc_tko_state_name(oc_tko_state_t s)
{
    switch (s) {
    case OC_TKO_UP:
        return "up";
    case OC_TKO_DOWN:
        return "down";
    case OC_TKO_PROBING:
        return "probing";
    }
    return "unknown";
}
