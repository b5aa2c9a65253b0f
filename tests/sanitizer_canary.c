/* One deliberate bug per sanitizer, for the tests sanitizer/asan and
 * sanitizer/ubsan of OC_SANITIZE builds (tests/CMakeLists.txt): they pass
 * only when the sanitizer's report appears, which proves that the build is
 * instrumented and that the sanitizer runtime is there.
 *
 *   sanitizer_canary asan N    writes one byte past a heap block of N bytes
 *   sanitizer_canary ubsan X   computes X + 1 in int (X = INT_MAX overflows)
 *
 * The size and the value come from the command line, so the compiler can
 * neither see the bug at compile time nor fold it away. Exits 0 when the
 * bug went unnoticed (no sanitizer), 2 on a usage error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int number(const char *s, long *out)
{
    char *end;
    errno = 0;
    *out = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

int main(int argc, char **argv)
{
    long n;
    if (argc != 3 || !number(argv[2], &n)) {
        fprintf(stderr, "usage: sanitizer_canary asan SIZE | ubsan INT\n");
        return 2;
    }
    if (strcmp(argv[1], "asan") == 0 && n > 0 && n < 4096) {
        volatile char *p = malloc((size_t)n);
        if (p == NULL)
            return 2;
        p[n] = 1; /* heap-buffer-overflow */
        free((void *)p);
        printf("asan: the write past the block went unnoticed\n");
        return 0;
    }
    if (strcmp(argv[1], "ubsan") == 0 && n >= 0 && n <= 2147483647L) {
        volatile int x = (int)n;
        int y = x + 1; /* signed integer overflow when x is INT_MAX */
        printf("ubsan: %d + 1 = %d went unnoticed\n", (int)n, y);
        return 0;
    }
    fprintf(stderr, "usage: sanitizer_canary asan SIZE | ubsan INT\n");
    return 2;
}
