/* objcached-wakeup: what one hop costs on this machine, before any code of
 * ours runs. Two processes bounce one byte over a unix socket pair, each
 * blocked in read() until the other writes: a round trip is two wake-ups
 * and two context switches, the least a request through a sidecar adds
 * (the client wakes objcached, objcached wakes the client). On bare metal
 * it is a few microseconds; on a virtual machine waking a halted virtual
 * CPU exits to the hypervisor and can cost several times that, which
 * frames every latency figure of the benchmark (bench/run.py prints it
 * with the machine).
 *
 *   objcached-wakeup [ROUNDS]     (default 20000, after 2000 not counted)
 *
 * Prints {"mode":"wakeup","rounds":N,"p50_us":..,"p90_us":..,"p99_us":..}. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 2000

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The echo side: until the other end closes (read returns 0) or fails. */
static void echo(int fd)
{
    char c;
    while (read(fd, &c, 1) == 1)
        if (write(fd, &c, 1) != 1)
            break;
    _exit(0);
}

static int bounce(int fd)
{
    char c = 'x';
    if (write(fd, &c, 1) != 1)
        return -1;
    ssize_t n;
    while ((n = read(fd, &c, 1)) < 0 && errno == EINTR)
        ;
    return n == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    if (argc > 2 || rounds < 100 || rounds > 10000000) {
        fprintf(stderr, "usage: objcached-wakeup [ROUNDS: 100..10000000]\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("objcached-wakeup: socketpair");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("objcached-wakeup: fork");
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        echo(sv[1]);
    }
    close(sv[1]);
    double *d = malloc((size_t)rounds * sizeof(*d));
    int rc = d == NULL;
    for (long i = 0; rc == 0 && i < WARMUP + rounds; i++) {
        double t0 = now_us();
        if (bounce(sv[0]) != 0) {
            fprintf(stderr, "objcached-wakeup: the echo process went away\n");
            rc = 1;
        } else if (i >= WARMUP) {
            d[i - WARMUP] = now_us() - t0;
        }
    }
    close(sv[0]); /* the echo side reads 0 and exits */
    waitpid(pid, NULL, 0);
    if (rc == 0) {
        qsort(d, (size_t)rounds, sizeof(*d), cmp_double);
        printf("{\"mode\":\"wakeup\",\"rounds\":%ld,\"p50_us\":%.1f,\"p90_us\":%.1f,"
               "\"p99_us\":%.1f}\n",
               rounds, d[rounds / 2], d[rounds * 9 / 10], d[rounds * 99 / 100]);
    }
    free(d);
    return rc;
}
