/*
 * objcache_pool: handles to one address shared by threads. Public contract in
 * objcache.h. The mutex guards only the idle stack; a handle in use belongs to
 * the thread that acquired it, so no I/O happens under the lock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "objcache.h"
#include "objcache_status.h"

struct objcache_pool {
    pthread_mutex_t mu;      /* guards idle and nidle */
    char *addr;              /* copied from objcache_pool_new() */
    objcache_options_t opts; /* copied from objcache_pool_new() */
    objcache_t **idle;       /* max_idle slots; [0..nidle) are handles */
    size_t nidle;
    size_t max_idle;
};

objcache_status_t objcache_pool_new(objcache_pool_t **out, const char *addr,
                                    const objcache_options_t *opts, size_t max_idle,
                                    char *err)
{
    objcache_t *probe = NULL;
    objcache_pool_t *p = NULL;
    *out = NULL;
    /* Making one handle checks the address and the options. */
    objcache_status_t st = objcache_new(&probe, addr, opts, err);
    if (st != OBJCACHE_OK)
        return st;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        goto nomem;
    p->idle = calloc(max_idle > 0 ? max_idle : 1, sizeof(*p->idle));
    p->addr = strdup(addr);
    if (p->idle == NULL || p->addr == NULL || pthread_mutex_init(&p->mu, NULL) != 0)
        goto nomem;
    if (opts != NULL)
        p->opts = *opts;
    else
        objcache_options_init(&p->opts);
    p->max_idle = max_idle;
    if (max_idle > 0)
        p->idle[p->nidle++] = probe;
    else
        objcache_free(probe);
    *out = p;
    return OBJCACHE_OK;
nomem:
    objcache_free(probe);
    if (p != NULL) {
        free(p->idle);
        free(p->addr);
        free(p);
    }
    return objcache_fail(err, OBJCACHE_ENOMEM, "out of memory");
}

objcache_status_t objcache_pool_acquire(objcache_pool_t *p, objcache_t **h)
{
    *h = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->nidle > 0)
        *h = p->idle[--p->nidle];
    pthread_mutex_unlock(&p->mu);
    if (*h != NULL)
        return OBJCACHE_OK;
    return objcache_new(h, p->addr, &p->opts, NULL);
}

void objcache_pool_release(objcache_pool_t *p, objcache_t *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->nidle < p->max_idle) {
        p->idle[p->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    objcache_free(h);
}

void objcache_pool_free(objcache_pool_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nidle; i++)
        objcache_free(p->idle[i]);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p->addr);
    free(p);
}
