#include "oc_stats.h"

#include <event2/buffer.h>
#include <inttypes.h>

void oc_stats_reset(oc_stats_t *st)
{
#define OC_STATS_RESET_COUNTER(name) st->name = 0;
#define OC_STATS_RESET_GAUGE(name)
#define OC_STATS_RESET(name, kind, help) OC_STATS_RESET_##kind(name)
    OC_STATS_LIST(OC_STATS_RESET)
#undef OC_STATS_RESET
#undef OC_STATS_RESET_GAUGE
#undef OC_STATS_RESET_COUNTER
}

void oc_stats_write(const oc_stats_t *st, struct evbuffer *out)
{
#define OC_STATS_LINE(name, kind, help)                                        \
    evbuffer_add_printf(out, "STAT " #name " %" PRIu64 "\r\n", st->name);
    OC_STATS_LIST(OC_STATS_LINE)
#undef OC_STATS_LINE
}
