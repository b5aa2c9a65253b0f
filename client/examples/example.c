/* Fetch users from objcached and print them; save one; show what went wrong. */
#include <objcache.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:11311";
    char err[OBJCACHE_ERRLEN];
    objcache_options_t opts;
    objcache_options_init(&opts);
    opts.io_timeout_ms = 2000;

    objcache_t *oc;
    if (objcache_new(&oc, addr, &opts, err) != OBJCACHE_OK) {
        fprintf(stderr, "bad address %s: %s\n", addr, err);
        return 2;
    }

    const char *keys[] = {"User:1", "User:2", "User:999999"};
    objcache_item_t items[3];
    objcache_status_t st = objcache_get_multi(oc, keys, 3, items);
    if (st != OBJCACHE_OK) {
        fprintf(stderr, "get: %s (%s)\n", objcache_strerror(st), objcache_errmsg(oc));
        objcache_free(oc);
        return 3;
    }
    for (size_t i = 0; i < 3; i++) {
        if (items[i].status == OBJCACHE_OK) /* value: valid until the next call on oc */
            printf("%s = %.*s\n", items[i].key, (int)items[i].value_len, items[i].value);
        else
            printf("%s: %s\n", items[i].key, objcache_strerror(items[i].status));
    }

    /* The app saved user 3 and committed: push the new object to the cache. */
    const char *json = "{\"id\":3,\"name\":\"Ada\",\"email\":\"ada@example.com\"}";
    st = objcache_push(oc, "User:3", json, strlen(json));
    if (st == OBJCACHE_OK)
        printf("push: stored\n");
    else /* e.g. "not stored (NOT_STORED)": a tombstone or a newer version won */
        printf("push: %s (%s)\n", objcache_strerror(st), objcache_errmsg(oc));

    objcache_free(oc);
    return 0;
}
