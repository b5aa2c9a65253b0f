/* Unit tests for oc_reload's rules: model indexes kept across reloads (the
 * same name keeps its index with its new settings, a removed model stays
 * disabled, new ones are appended), the ownership move that lets both
 * configurations be freed once (the valgrind pass checks it), which
 * models the near-cache drops, and when the consumer or the follower
 * starts or stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oc_conf.h"
#include "oc_reload.h"

#define HEAD                                                                             \
    "[memcached]\nservers = 127.0.0.1:11211\n[postgresql]\nconninfo = dbname=app\n"

static oc_conf_t *load(const char *models)
{
    char text[2048], err[OC_ERRLEN];
    snprintf(text, sizeof(text), "%s%s", HEAD, models);
    oc_conf_t *c = oc_conf_load_string(text, strlen(text), err);
    if (c == NULL)
        fail_msg("%s", err);
    return c;
}

/* Reload cur to next as oc_reload does; next is the configuration now. */
static oc_conf_t *reload(oc_conf_t *cur, oc_conf_t *next)
{
    size_t n = 0;
    oc_model_conf_t *models = oc_reload_keep_indexes(cur, next, &n);
    assert_non_null(models);
    oc_reload_commit_indexes(cur, next, models, n);
    oc_conf_free(cur);
    return next;
}

static void expect(const oc_conf_t *c, size_t i, const char *name, int disabled,
                   uint32_t ttl_s)
{
    assert_true(i < c->nmodels);
    assert_string_equal(c->models[i].name, name);
    assert_int_equal(c->models[i].disabled, disabled);
    assert_int_equal(c->models[i].ttl_s, ttl_s);
}

static void test_keep_indexes(void **state)
{
    (void)state;
    oc_conf_t *c = load("[model A]\ntable = a\n[model B]\ntable = b\n"
                        "[model C]\ntable = c\n");
    /* C changes, B goes, D comes, the file lists them in another order */
    oc_conf_t *next = load("[model D]\ntable = d\n[model C]\ntable = c\nttl = 5m\n"
                           "[model A]\ntable = a2\n");
    size_t n = 0;
    oc_model_conf_t *m = oc_reload_keep_indexes(c, next, &n);
    assert_non_null(m);
    assert_int_equal(n, 4);
    assert_string_equal(m[0].name, "A");
    assert_string_equal(m[0].table, "a2"); /* next's settings */
    assert_false(m[0].disabled);
    assert_string_equal(m[1].name, "B");
    assert_true(m[1].disabled);
    assert_ptr_equal(m[1].table, c->models[1].table); /* cur's entry, moved */
    assert_string_equal(m[2].name, "C");
    assert_int_equal(m[2].ttl_s, 300);
    assert_string_equal(m[3].name, "D");
    assert_false(m[3].disabled);
    oc_reload_commit_indexes(c, next, m, n);
    assert_ptr_equal(next->models, m);
    assert_int_equal(next->nmodels, 4);
    assert_null(c->models[1].name); /* moved out: freeing c leaves it alone */
    assert_non_null(c->models[0].name);
    oc_conf_free(c);

    /* B comes back at its old index, A leaves */
    oc_conf_t *again = load("[model B]\ntable = b\nttl = 1m\n[model C]\ntable = c\n"
                            "[model D]\ntable = d\n");
    c = reload(next, again);
    assert_int_equal(c->nmodels, 4);
    expect(c, 0, "A", 1, 3600);
    expect(c, 1, "B", 0, 60);
    expect(c, 2, "C", 0, 3600);
    expect(c, 3, "D", 0, 3600);

    /* the same file: nothing moves, nothing is disabled */
    c = reload(c, load("[model B]\ntable = b\nttl = 1m\n[model C]\ntable = c\n"
                       "[model D]\ntable = d\n"));
    assert_int_equal(c->nmodels, 4);
    expect(c, 0, "A", 1, 3600);
    expect(c, 1, "B", 0, 60);

    /* every model replaced: the old stay disabled, the new follow */
    c = reload(c, load("[model E]\ntable = e\n[model F]\ntable = f\n"));
    assert_int_equal(c->nmodels, 6);
    for (size_t i = 0; i < 4; i++)
        assert_true(c->models[i].disabled);
    expect(c, 4, "E", 0, 3600);
    expect(c, 5, "F", 0, 3600);
    oc_conf_free(c);
}

static void test_near_drop(void **state)
{
    (void)state;
    oc_model_conf_t a = {.near_ttl_ms = 500}, b = {.near_ttl_ms = 500};
    assert_false(oc_reload_near_drop(&a, &b));
    b.near_ttl_ms = 1000; /* longer: entries stored under the old rule */
    assert_true(oc_reload_near_drop(&a, &b));
    b.near_ttl_ms = 0; /* left the near-cache */
    assert_true(oc_reload_near_drop(&a, &b));
    a.near_ttl_ms = 0;
    assert_false(oc_reload_near_drop(&a, &b));
    b.disabled = 1; /* the model left */
    assert_true(oc_reload_near_drop(&a, &b));
}

/* What a model's keys name changed: what the near-cache holds was read
 * under the old definition. */
static void test_near_drop_on_a_new_definition(void **state)
{
    (void)state;
    char *cols_a[] = {"id", "name"}, *cols_b[] = {"id", "email"};
    oc_model_conf_t a = {.schema = "public",
                         .table = "users",
                         .key_column = "id",
                         .key_type = OC_KEY_BIGINT,
                         .columns = cols_a,
                         .ncolumns = 2,
                         .near_ttl_ms = 500};
    oc_model_conf_t b = a;
    assert_false(oc_reload_near_drop(&a, &b));
    b.table = "people";
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.schema = "app";
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.key_column = "uid";
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.key_type = OC_KEY_TEXT;
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.columns = cols_b;
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.ncolumns = 1;
    assert_true(oc_reload_near_drop(&a, &b));
    b = a;
    b.columns = NULL; /* the whole row now */
    b.ncolumns = 0;
    assert_true(oc_reload_near_drop(&a, &b));
    char *same[] = {"id", "name"}; /* equal text, other storage */
    b = a;
    b.columns = same;
    b.table = (char[]){"users"};
    assert_false(oc_reload_near_drop(&a, &b));
}

static void test_switch(void **state)
{
    (void)state;
    assert_int_equal(oc_reload_switch(0, 0), OC_RELOAD_KEEP);
    assert_int_equal(oc_reload_switch(0, 250), OC_RELOAD_START);
    assert_int_equal(oc_reload_switch(250, 0), OC_RELOAD_STOP);
    /* another period: the running part reads it at its next turn */
    assert_int_equal(oc_reload_switch(250, 1000), OC_RELOAD_KEEP);
    assert_int_equal(oc_reload_switch(1, UINT32_MAX), OC_RELOAD_KEEP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_indexes),
        cmocka_unit_test(test_near_drop),
        cmocka_unit_test(test_near_drop_on_a_new_definition),
        cmocka_unit_test(test_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
