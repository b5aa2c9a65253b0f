/*
 * lg_clock: CLOCK_MONOTONIC readings, the only clock the load generator
 * measures with (wall-clock jumps must not show up as latency).
 */
#ifndef LG_CLOCK_H
#define LG_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t lg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double lg_now_s(void)
{
    return (double)lg_now_ns() / 1e9;
}

#endif
