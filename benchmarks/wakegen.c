/* Wakeup generator for `make bench-perf`: pairs of threads ping-pong one byte
 * through pipes, each blocking in poll(), so every round trip is two wakeups
 * inside a wait syscall. Usage: wakegen PAIRS SECONDS [ROUNDS_PER_SEC_PER_PAIR]
 * (0 = as fast as possible). Prints the total round trips. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static double rate;

struct pair { int a2b[2], b2a[2]; long rounds; };

static void wait_read(int fd) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char c;
    while (poll(&p, 1, -1) < 0) {}
    if (read(fd, &c, 1) != 1) exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *side_a(void *arg) {
    struct pair *p = arg;
    double start = now();
    while (!stop) {
        if (write(p->a2b[1], "x", 1) != 1) exit(1);
        wait_read(p->b2a[0]);
        p->rounds++;
        if (rate > 0) {  /* pace: sleep until this round's due time */
            double due = start + p->rounds / rate, t = now();
            if (due > t) usleep((useconds_t)((due - t) * 1e6));
        }
    }
    if (write(p->a2b[1], "q", 1) != 1) exit(1);
    return NULL;
}

static void *side_b(void *arg) {
    struct pair *p = arg;
    for (;;) {
        struct pollfd q = { .fd = p->a2b[0], .events = POLLIN };
        char c;
        while (poll(&q, 1, -1) < 0) {}
        if (read(p->a2b[0], &c, 1) != 1 || c == 'q') return NULL;
        if (write(p->b2a[1], "y", 1) != 1) exit(1);
    }
}

int main(int argc, char **argv) {
    int pairs = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    rate = argc > 3 ? atof(argv[3]) : 0.0;
    struct pair *ps = calloc(pairs, sizeof *ps);
    pthread_t *th = calloc(2 * pairs, sizeof *th);
    for (int i = 0; i < pairs; i++) {
        if (pipe(ps[i].a2b) || pipe(ps[i].b2a)) return 1;
        pthread_create(&th[2 * i + 1], NULL, side_b, &ps[i]);
        pthread_create(&th[2 * i], NULL, side_a, &ps[i]);
    }
    usleep((useconds_t)(secs * 1e6));
    stop = 1;
    long total = 0;
    for (int i = 0; i < 2 * pairs; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < pairs; i++) total += ps[i].rounds;
    printf("%ld\n", total);
    return 0;
}
