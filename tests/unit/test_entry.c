/* Unit tests for oc_entry: the flags of every kind, classifying what a read
 * found, and the TTLs written with their per-key jitter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oc_entry.h"

static void test_flags_round_trip(void **state)
{
    (void)state;
    for (int k = OC_ENTRY_OBJECT; k <= OC_ENTRY_PUSHED; k++) {
        uint32_t f = oc_entry_flags((oc_entry_kind_t)k);
        assert_int_equal(f >> 16, OC_ENTRY_MAGIC);
        assert_int_equal(oc_entry_kind(f), k);
    }
    assert_int_equal(oc_entry_flags(OC_ENTRY_OBJECT), 0x6F630101u);
    assert_int_equal(oc_entry_kind(0), OC_ENTRY_NONE);
    assert_int_equal(oc_entry_kind(0x6F630201u), OC_ENTRY_NONE); /* other version */
    assert_int_equal(oc_entry_kind(0x6F630106u), OC_ENTRY_NONE); /* unknown kind */
    assert_int_equal(oc_entry_kind(0x6F630100u), OC_ENTRY_NONE); /* kind 0 */
    assert_int_equal(oc_entry_kind(0x12340101u), OC_ENTRY_NONE); /* not ours */
}

static oc_entry_class_t classify(int found, int error, oc_mc_lease_t lease,
                                 uint32_t flags, size_t len)
{
    oc_mc_hit_t h = {
        .found = found, .error = error, .lease = lease, .flags = flags, .len = len};
    return oc_entry_classify(&h);
}

static void test_classify(void **state)
{
    (void)state;
    uint32_t obj = oc_entry_flags(OC_ENTRY_OBJECT);
    assert_int_equal(classify(1, 0, OC_MC_LEASE_NONE, obj, 10), OC_EC_OBJECT);
    assert_int_equal(classify(1, 0, OC_MC_LEASE_NONE, obj, 0), OC_EC_OBJECT);
    assert_int_equal(classify(1, 0, 0, oc_entry_flags(OC_ENTRY_MISSING), 0),
                     OC_EC_ABSENT);
    assert_int_equal(classify(1, 0, 0, oc_entry_flags(OC_ENTRY_TOMBSTONE), 0),
                     OC_EC_ABSENT);
    /* an old sidecar's lease entry, and memcached's own seen by a classic get */
    /* a pushed object not checked yet is served like any object */
    assert_int_equal(classify(1, 0, 0, oc_entry_flags(OC_ENTRY_PUSHED), 10),
                     OC_EC_OBJECT);
    assert_int_equal(classify(1, 0, 0, oc_entry_flags(OC_ENTRY_LEASE), 8),
                     OC_EC_LEASE_HELD);
    assert_int_equal(classify(1, 0, 0, 0, 0), OC_EC_LEASE_HELD);
    /* a meta get's W and Z */
    assert_int_equal(classify(0, 0, OC_MC_LEASE_WON, 0, 0), OC_EC_LEASE_WON);
    assert_int_equal(classify(0, 0, OC_MC_LEASE_HELD, 0, 0), OC_EC_LEASE_HELD);
    /* misses: nothing, somebody else's item, an error */
    assert_int_equal(classify(0, 0, 0, 0, 0), OC_EC_EMPTY);
    assert_int_equal(classify(1, 0, 0, 7, 3), OC_EC_EMPTY);
    assert_int_equal(classify(1, 0, 0, 0, 3), OC_EC_EMPTY);
    assert_int_equal(classify(0, 1, 0, 0, 0), OC_EC_ERROR);
}

static void test_jitter(void **state)
{
    (void)state;
    const char *k1 = "oc:User:1", *k2 = "oc:User:2";
    /* no jitter: exact */
    assert_int_equal(oc_entry_jitter(3600, 0, k1, strlen(k1)), 3600);
    /* the same key, the same TTL, every time and in every sidecar */
    uint32_t a = oc_entry_jitter(3600, 10, k1, strlen(k1));
    assert_int_equal(a, oc_entry_jitter(3600, 10, k1, strlen(k1)));
    assert_true(a >= 3600 && a <= 3960);
    /* keys are spread: over many keys, the TTLs cover the range */
    uint32_t lo = UINT32_MAX, hi = 0;
    char key[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(key, sizeof(key), "oc:User:%d", i);
        uint32_t t = oc_entry_jitter(3600, 10, key, (size_t)n);
        assert_true(t >= 3600 && t <= 3960);
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    assert_true(lo < 3620 && hi > 3940);
    (void)k2;
    /* capped at memcached's 30 days (more would be an absolute time) */
    assert_int_equal(oc_entry_jitter(OC_ENTRY_TTL_MAX, 100, k1, strlen(k1)),
                     OC_ENTRY_TTL_MAX);
    assert_int_equal(oc_entry_jitter(UINT32_MAX, 0, k1, strlen(k1)), OC_ENTRY_TTL_MAX);
    /* 1 s with 10%: no spread to add */
    assert_int_equal(oc_entry_jitter(1, 10, k1, strlen(k1)), 1);
}

static void test_item_by_kind(void **state)
{
    (void)state;
    oc_model_conf_t m = {.ttl_s = 3600, .missing_ttl_s = 30, .tombstone_ttl_s = 600};
    oc_mc_item_t it = {.key = "oc:User:1", .klen = 9, .val = "{}", .vlen = 2};
    oc_entry_item(&it, OC_ENTRY_OBJECT, &m, 0);
    assert_int_equal(it.flags, oc_entry_flags(OC_ENTRY_OBJECT));
    assert_int_equal(it.exptime_s, 3600);
    assert_int_equal(it.vlen, 2); /* an object keeps its value */
    oc_entry_item(&it, OC_ENTRY_MISSING, &m, 0);
    assert_int_equal(it.flags, oc_entry_flags(OC_ENTRY_MISSING));
    assert_int_equal(it.exptime_s, 30);
    assert_int_equal(it.vlen, 0);
    oc_entry_item(&it, OC_ENTRY_TOMBSTONE, &m, 0);
    assert_int_equal(it.exptime_s, 600);
    assert_string_equal(it.val, "");
    /* with jitter, every kind is spread the same way for a key */
    oc_entry_item(&it, OC_ENTRY_TOMBSTONE, &m, 50);
    assert_int_equal(it.exptime_s, oc_entry_jitter(600, 50, it.key, it.klen));
    assert_int_equal(oc_entry_exptime(OC_ENTRY_OBJECT, &m, 50, "k", 1),
                     oc_entry_jitter(3600, 50, "k", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_round_trip),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_item_by_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
