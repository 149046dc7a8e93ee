/* TLS 1.3 handshake load generator for `python -m tests.bench tls` (tests/bench/tls.py).
 *
 *   tlsgen HOST PORT full|resume CONCURRENCY WARMUP_S MEASURE_S SOURCES
 *
 * Keeps CONCURRENCY connections in flight on one thread (epoll, non-blocking
 * OpenSSL): each connects, does a TLS 1.3 handshake (no certificate checks:
 * the server's own cost is measured, and the ECDSA signature of its
 * CertificateVerify is still verified by OpenSSL), then reads until the
 * server's first NewSessionTicket (RFC 8446 §4.6.1).  A server sends tickets
 * only after it verified the client's Finished, so a ticket proves that the
 * server finished its side of the handshake too, not just TCP.  Then
 * close_notify and close, and the slot opens the next connection.
 *
 * "resume" offers the newest ticket received (PSK with (EC)DHE, RFC 8446
 * §2.2) on every connection and counts SSL_session_reused(); the first
 * connections are full handshakes that fetch a ticket.  Connections come
 * from SOURCES loopback addresses (127.0.0.2...) so that TIME_WAIT never
 * runs out of ports.
 *
 * C, not Python: a Python client pays the same OpenSSL cost as the server
 * plus its own interpreter, and would measure itself.  Prints a JSON line
 * when the MEASURE_S window opens (after WARMUP_S), one with what completed in it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { HANDSHAKE, TICKET };

struct conn {
    int fd;
    SSL *ssl;
    int state;
    int tickets;
    double started;
};

static SSL_CTX *ctx;
static SSL_SESSION *newest; /* resume mode: the newest ticket */
static int resume_mode;
static struct sockaddr_in server;
static int sources, next_source;
static int epfd;

static long done_total, done_window, reused_window, full_window, failed_window, failed_total;
static long tickets_total;
static double window_start, window_end;
static double *latencies;
static long latency_count, latency_cap;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int new_session(SSL *ssl, SSL_SESSION *session) {
    struct conn *c = SSL_get_app_data(ssl);
    if (c != NULL)
        c->tickets++;
    tickets_total++;
    if (!resume_mode)
        return 0; /* not kept */
    if (newest != NULL)
        SSL_SESSION_free(newest);
    newest = session;
    return 1; /* we keep the reference */
}

static void watch(struct conn *c, int op, int want_write) {
    struct epoll_event ev = {.events = want_write ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(2);
    }
}

static int in_window(double t) { return t >= window_start && t < window_end; }

static void start(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002 + next_source);
    next_source = (next_source + 1) % sources;
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0) {
        perror("bind");
        exit(2);
    }
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) != 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(2);
    }
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_app_data(c->ssl, c);
    if (resume_mode && newest != NULL)
        SSL_set_session(c->ssl, newest);
    c->state = HANDSHAKE;
    c->tickets = 0;
    c->started = now();
    watch(c, EPOLL_CTL_ADD, 1); /* writable once connected */
}

static void finish(struct conn *c, int ok) {
    double t = now();
    if (ok) {
        SSL_shutdown(c->ssl); /* close_notify; the server answers, we do not wait */
        done_total++;
        if (in_window(t)) {
            done_window++;
            if (SSL_session_reused(c->ssl))
                reused_window++;
            else
                full_window++;
            if (latency_count < latency_cap)
                latencies[latency_count++] = t - c->started;
        }
    } else {
        failed_total++;
        if (in_window(t))
            failed_window++;
        ERR_clear_error();
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    SSL_free(c->ssl);
    close(c->fd);
    start(c);
}

static void step(struct conn *c) {
    for (;;) {
        int rc, err;
        if (c->state == HANDSHAKE) {
            rc = SSL_connect(c->ssl);
            if (rc == 1) {
                c->state = TICKET;
                continue;
            }
        } else {
            char buf[512];
            rc = SSL_read(c->ssl, buf, sizeof buf);
            if (c->tickets > 0) {
                finish(c, 1);
                return;
            }
            if (rc > 0)
                continue; /* the server spoke first: not expected, keep reading */
        }
        err = SSL_get_error(c->ssl, rc);
        if (err == SSL_ERROR_WANT_READ) {
            watch(c, EPOLL_CTL_MOD, 0);
            return;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            watch(c, EPOLL_CTL_MOD, 1);
            return;
        }
        finish(c, 0);
        return;
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double q) {
    if (latency_count == 0)
        return 0;
    long i = (long)(q * latency_count);
    if (i >= latency_count)
        i = latency_count - 1;
    return latencies[i] * 1e3;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT full|resume CONCURRENCY WARMUP_S MEASURE_S SOURCES\n",
                argv[0]);
        return 2;
    }
    server.sin_family = AF_INET;
    server.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    resume_mode = strcmp(argv[3], "resume") == 0;
    int concurrency = atoi(argv[4]);
    double warmup = atof(argv[5]), measure = atof(argv[6]);
    sources = atoi(argv[7]);
    if (concurrency < 1 || sources < 1 || sources > 250) {
        fprintf(stderr, "bad concurrency or sources\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN); /* a peer gone is a failed connection, not our end */
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);

    epfd = epoll_create1(0);
    latency_cap = 2000000;
    latencies = malloc(sizeof(double) * latency_cap);
    struct conn *conns = calloc(concurrency, sizeof *conns);
    if (latencies == NULL || conns == NULL)
        return 2;

    double t0 = now();
    window_start = t0 + warmup;
    window_end = window_start + measure;
    if (resume_mode) { /* one full handshake first, to hold a ticket */
        start(&conns[0]);
        while (newest == NULL && now() < window_start) {
            struct epoll_event ev;
            if (epoll_wait(epfd, &ev, 1, 100) == 1)
                step(ev.data.ptr);
        }
        for (int i = 1; i < concurrency; i++)
            start(&conns[i]);
    } else {
        for (int i = 0; i < concurrency; i++)
            start(&conns[i]);
    }

    double cpu0 = -1, cpu1 = 0;
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        if (cpu0 < 0 && t >= window_start) {
            cpu0 = cpu_seconds();
            printf("{\"event\": \"measuring\"}\n"); /* the caller starts its clocks */
            fflush(stdout);
        }
        if (t >= window_end)
            break;
        int n = epoll_wait(epfd, events, 256, 50);
        for (int i = 0; i < n; i++)
            step(events[i].data.ptr);
    }
    cpu1 = cpu_seconds();
    if (cpu0 < 0)
        cpu0 = cpu1;

    qsort(latencies, latency_count, sizeof(double), by_value);
    printf("{\"event\": \"result\", \"mode\": \"%s\", \"seconds\": %.3f, \"done\": %ld,"
           " \"full\": %ld, \"reused\": %ld, \"failed\": %ld, \"done_total\": %ld,"
           " \"failed_total\": %ld, \"tickets_total\": %ld, \"cpu_s\": %.3f,"
           " \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"openssl\": \"%s\"}\n",
           resume_mode ? "resume" : "full", measure, done_window, full_window, reused_window,
           failed_window, done_total, failed_total, tickets_total, cpu1 - cpu0, percentile(0.5),
           percentile(0.99), OpenSSL_version(OPENSSL_VERSION));
    fflush(stdout);
    return 0; /* the open connections go with the process */
}
