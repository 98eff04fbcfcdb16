/* LD_PRELOAD shim for the benchmark's load generator (wrk has no source-address option).
 *
 * Every connect() of an unbound IPv4 socket to a loopback address (127.0.0.0/8) is first
 * bound to the next of BENCH_SOURCE_ADDRESSES loopback source addresses 127.1.x.y (round
 * robin, port chosen at connect time: IP_BIND_ADDRESS_NO_PORT), so thousands of benchmark
 * connections come from many client addresses as real users do, rather than from one
 * address that per-client caps would rightly throttle. Without the variable (or 0) it does
 * nothing. Built by bench/measure.py: cc -O2 -shared -fPIC -o srcaddr.so srcaddr.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static atomic_uint next_index;

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
    const char *env = getenv("BENCH_SOURCE_ADDRESSES");
    unsigned count = env ? (unsigned)atoi(env) : 0;
    if (count && addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *to = (const struct sockaddr_in *)addr;
        struct sockaddr_in local = {0};
        socklen_t size = sizeof local;
        if ((ntohl(to->sin_addr.s_addr) >> 24) == 127 &&
            getsockname(fd, (struct sockaddr *)&local, &size) == 0 && local.sin_port == 0 &&
            local.sin_addr.s_addr == 0) {
            unsigned n = atomic_fetch_add(&next_index, 1) % count + 1;
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            local.sin_family = AF_INET;
            local.sin_port = 0;
            local.sin_addr.s_addr = htonl(0x7F010000u | n); /* 127.1.(n>>8).(n&255) */
            bind(fd, (struct sockaddr *)&local, sizeof local);
        }
    }
    return real_connect(fd, addr, len);
}
