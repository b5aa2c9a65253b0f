/* oc_gens's pure rule: which failed reads of the models' generations no
 * retry would change (then generation 0, as before), and which leave them
 * unknown (memcached bypassed until a read succeeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "oc_gens.h"

static void test_never_readable(void **state)
{
    (void)state;
    assert_true(oc_gens_never_readable("42P01")); /* no objcached.models */
    assert_true(oc_gens_never_readable("3F000")); /* no objcached schema */
    assert_true(oc_gens_never_readable("42501")); /* no grant */
    assert_false(oc_gens_never_readable(NULL));   /* no answer: the connection */
    assert_false(oc_gens_never_readable(""));
    assert_false(oc_gens_never_readable("57014")); /* statement timeout (a lock) */
    assert_false(oc_gens_never_readable("53300")); /* too many clients */
    assert_false(oc_gens_never_readable("57P03")); /* starting up */
    assert_false(oc_gens_never_readable("08006"));
    assert_false(oc_gens_never_readable("42P0")); /* a prefix is not the code */
    assert_false(oc_gens_never_readable("42P011"));
    assert_false(oc_gens_never_readable("42p01")); /* SQLSTATEs are upper case */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_readable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
