// herdtrace kernel side: one record per wakeup of a traced thread, with its outcome.
//
// Tracepoints only (this kernel has no kprobes and refuses fentry). Reads only
// tracepoint arguments, helper results and user memory, never kernel structs,
// so headers of a different kernel version are safe.
//
// Options (-D): RINGBUF_PAGES, PID_MAX, MAX_THREADS, CAUSE_WINDOW_NS, SK_KEY, TP_RETURN,
// HAVE_SK_DATA_READY, HAVE_EPOLL_PWAIT2.
#include <uapi/linux/ptrace.h>
#include <linux/signal.h>  // sigset_t, in the generated args of epoll_pwait/ppoll/pselect6
#include "herd_event.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif
#ifndef PID_MAX
#define PID_MAX 4194304  // /proc/sys/kernel/pid_max, passed at load time
#endif
#ifndef MAX_THREADS
#define MAX_THREADS 65536
#endif
#ifndef CAUSE_WINDOW_NS
#define CAUSE_WINDOW_NS 200000
#endif
// A classic tracepoint's BPF program decides, by returning non-zero, whether the
// event still reaches perf. 0 (as bcc's tools and bpftrace) is cheaper (measured:
// ~3% of throughput at saturation) but empties a `perf record` of the same
// tracepoints running beside herdtrace; `record --let-perf-see` passes 1.
#ifndef TP_RETURN
#define TP_RETURN 0
#endif
#ifndef SK_KEY
#define SK_KEY 0x5bd1e995ULL
#endif

#define ERR_EAGAIN 11
#define ST_ESTABLISHED 1
#define ST_SYN_RECV 3
#define ST_CLOSE 7
#define ST_LISTEN 10
#define PROTO_TCP 6
#define FAM_INET 2
#define FAM_INET6 10
#define SLEEP_INTERRUPTIBLE 1

// Diagnostic counters, per CPU; index order matches collectors/bcc.py COUNTERS.
#define CNT_LOST 0          // ring buffer reservation failed: a record is lost
#define CNT_THREADS_FULL 1  // a new thread could not be traced: `traced` is full
#define CNT_MERGED 2        // a waking of a thread whose last wakeup had not run yet
#define CNT_NUM 3

// Per traced thread: identity, the wait syscall it is in, and its open wakeup.
struct traced_thread {
    u64 fork_ts;
    u64 enter_ts;
    u64 accept_buf;     // user sockaddr pointer passed to accept
    u32 tgid;           // 0 until the thread runs in its own context
    u32 parent;
    s32 wait_fd;
    u8 wait_call;       // HERD_CALL_*, NONE outside a wait syscall
    u8 pending;         // `wakeup` is open: its outcome is not known yet
    u8 returned;        // the woken wait has returned to user space
    u8 pad;
    struct herd_event wakeup;
};

// What the network stack just did on this CPU, to tie wakeups to a cause.
struct net_cause {
    u64 conn_ts;
    u64 conn_id;
    u64 ready_ts;
    u64 ready_sk;
    u64 ready_conn;
};

BPF_HASH(traced, u32, struct traced_thread, MAX_THREADS);
// The same set as a flat array indexed by tid: most events are of untraced threads,
// and an array lookup (inlined by the verifier) rejects them far cheaper than a hash.
BPF_ARRAY(is_traced, u8, PID_MAX);
BPF_HASH(listen_ports, u16, u8, 1024);
BPF_ARRAY(conn_seq, u64, 1);
BPF_PERCPU_ARRAY(cause, struct net_cause, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_NUM);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// User space drains on a clock and never sleeps on the ring: no wakeups needed.
#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#endif

// control[0] = 1 freezes every probe: user space then reads final state without
// paying for detaching (tracepoint unregistration waits for RCU, ~80 ms each).
BPF_ARRAY(control, u32, 1);

static __always_inline int frozen(void) {
    int zero = 0;
    u32 *c = control.lookup(&zero);
    return c && *c;
}

static __always_inline struct traced_thread *find(u32 tid) {
    u8 *on = is_traced.lookup(&tid);
    if (!on || !*on)
        return 0;
    return traced.lookup(&tid);
}

static __always_inline void count(int idx) {
    u64 *c = counters.lookup(&idx);
    if (c)
        (*c)++;
}

// Kernel addresses stay out of recordings: a keyed bijective mix keeps identity only.
static __always_inline u64 sk_id(const void *sk) {
    u64 x = (u64)sk ^ SK_KEY;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static __always_inline void emit(const struct herd_event *src) {
    struct herd_event *e = events.ringbuf_reserve(sizeof(struct herd_event));
    if (!e) {
        count(CNT_LOST);
        return;
    }
    __builtin_memcpy(e, src, sizeof(struct herd_event));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline struct herd_event *new_event(u8 kind) {
    struct herd_event *e = events.ringbuf_reserve(sizeof(struct herd_event));
    if (!e) {
        count(CNT_LOST);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(struct herd_event));
    e->kind = kind;
    e->ts = bpf_ktime_get_ns();
    e->cpu = bpf_get_smp_processor_id();
    return e;
}

// Called in the thread's own context: learn its process, say it exists.
static __always_inline void announce(struct traced_thread *t, u32 tid, u32 tgid) {
    if (t->tgid)
        return;
    t->tgid = tgid;
    struct herd_event *e = new_event(HERD_KIND_THREAD);
    if (!e)
        return;
    e->ts = t->fork_ts;
    e->tid = tid;
    e->tgid = tgid;
    e->other_tid = t->parent;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void close_wakeup(struct traced_thread *t, u8 unreturned_outcome) {
    struct herd_event *w = &t->wakeup;
    if (!t->returned)
        w->outcome = unreturned_outcome;
    else if (w->accepts)
        w->outcome = HERD_OUTCOME_ACCEPTED;
    else if (w->eagains)
        w->outcome = HERD_OUTCOME_EAGAIN;
    else
        w->outcome = HERD_OUTCOME_OTHER;
    emit(w);
    t->pending = 0;
}

static __always_inline void wait_enter(u8 call, s32 fd, u64 buf) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    if (!t || frozen())
        return;
    announce(t, tid, id >> 32);
    t->wait_call = call;
    t->wait_fd = fd;
    t->enter_ts = bpf_ktime_get_ns();
    t->accept_buf = buf;
}

static __always_inline void emit_accept(struct traced_thread *t, u32 tid, s32 ret) {
    struct herd_event *e = new_event(HERD_KIND_ACCEPT);
    if (!e)
        return;
    e->tid = tid;
    e->tgid = t->tgid;
    e->fd = t->wait_fd;
    e->ret = ret;
    e->enter_ts = t->enter_ts;
    e->wait_call = t->wait_call;
    if (ret >= 0 && t->accept_buf) {
        u8 *ubuf = (u8 *)t->accept_buf;
        u16 family = 0;
        u16 port_be = 0;
        bpf_probe_read_user(&family, sizeof(family), ubuf);
        bpf_probe_read_user(&port_be, sizeof(port_be), ubuf + 2);
        if (family == FAM_INET) {
            e->raddr[10] = 0xff;
            e->raddr[11] = 0xff;
            bpf_probe_read_user(&e->raddr[12], 4, ubuf + 4);
            e->flags |= HERD_FLAG_PEER;
        } else if (family == FAM_INET6) {
            bpf_probe_read_user(&e->raddr[0], 16, ubuf + 8);
            e->flags |= HERD_FLAG_PEER | HERD_FLAG_IPV6;
        }
        e->rport = (port_be >> 8) | ((port_be & 0xff) << 8);
    }
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void wait_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    if (!t || !t->wait_call || frozen())
        return;
    announce(t, tid, id >> 32);
    u8 call = t->wait_call;
    if (call == HERD_CALL_ACCEPT || call == HERD_CALL_ACCEPT4) {
        emit_accept(t, tid, (s32)ret);
        if (t->pending) {
            if (ret >= 0)
                t->wakeup.accepts++;
            else if (ret == -ERR_EAGAIN)
                t->wakeup.eagains++;
        }
    }
    if (t->pending && !t->returned) {
        t->returned = 1;
        t->wakeup.ret_ts = bpf_ktime_get_ns();
        t->wakeup.ret = (s32)ret;
    }
    t->wait_call = HERD_CALL_NONE;
}

#define WAIT_SYSCALL(name, call, fdexpr, bufexpr)             \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name) {            \
        wait_enter(call, (s32)(fdexpr), (u64)(bufexpr));      \
        return TP_RETURN;                                     \
    }                                                         \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) {             \
        wait_exit(args->ret);                                 \
        return TP_RETURN;                                     \
    }

WAIT_SYSCALL(accept, HERD_CALL_ACCEPT, args->fd, args->upeer_sockaddr)
WAIT_SYSCALL(accept4, HERD_CALL_ACCEPT4, args->fd, args->upeer_sockaddr)
WAIT_SYSCALL(epoll_wait, HERD_CALL_EPOLL_WAIT, args->epfd, 0)
WAIT_SYSCALL(epoll_pwait, HERD_CALL_EPOLL_PWAIT, args->epfd, 0)
#ifdef HAVE_EPOLL_PWAIT2
WAIT_SYSCALL(epoll_pwait2, HERD_CALL_EPOLL_PWAIT2, args->epfd, 0)
#endif
WAIT_SYSCALL(poll, HERD_CALL_POLL, args->nfds, 0)
WAIT_SYSCALL(ppoll, HERD_CALL_PPOLL, args->nfds, 0)
WAIT_SYSCALL(select, HERD_CALL_SELECT, args->n, 0)
WAIT_SYSCALL(pselect6, HERD_CALL_PSELECT6, args->n, 0)

TRACEPOINT_PROBE(sched, sched_waking) {
    u32 tid = args->pid;
    struct traced_thread *t = find(tid);
    if (!t || !t->wait_call || frozen())
        return TP_RETURN;
    if (t->pending) {
        if (!t->returned) {
            count(CNT_MERGED);
            return TP_RETURN;
        }
        close_wakeup(t, HERD_OUTCOME_OTHER);
    }
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    struct herd_event *w = &t->wakeup;
    __builtin_memset(w, 0, sizeof(*w));
    w->kind = HERD_KIND_WAKEUP;
    w->ts = now;
    w->enter_ts = t->enter_ts;
    w->tid = tid;
    w->tgid = t->tgid;
    w->other_tid = (u32)id;
    w->other_tgid = id >> 32;
    w->fd = t->wait_fd;
    w->cpu = bpf_get_smp_processor_id();
    w->target_cpu = args->target_cpu;
    w->wait_call = t->wait_call;
    if ((u32)id == 0)
        w->flags |= HERD_FLAG_WAKER_IDLE;
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    if (c && c->ready_ts && now - c->ready_ts < CAUSE_WINDOW_NS) {
        w->flags |= HERD_FLAG_NET_CAUSE;
        w->sk = c->ready_sk;
        w->conn_id = c->ready_conn;
    }
    t->pending = 1;
    t->returned = 0;
    return TP_RETURN;
}

TRACEPOINT_PROBE(sched, sched_switch) {
    // The hottest probe: one lookup per side, most of them misses.
    u32 prev = args->prev_pid;
    struct traced_thread *t = find(prev);
    if (t && !frozen()) {
        announce(t, prev, bpf_get_current_pid_tgid() >> 32);
        // Blocking again inside a wait ends the open wakeup: a woken wait that
        // never returned was absorbed.
        if ((args->prev_state & SLEEP_INTERRUPTIBLE) && t->wait_call && t->pending)
            close_wakeup(t, HERD_OUTCOME_ABSORBED);
    }
    u32 next = args->next_pid;
    t = find(next);
    if (t && t->pending && !t->wakeup.oncpu_ts && !frozen())
        t->wakeup.oncpu_ts = bpf_ktime_get_ns();
    return TP_RETURN;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 parent = args->parent_pid;
    if (!find(parent) || frozen())
        return TP_RETURN;
    u32 child = args->child_pid;
    struct traced_thread fresh = {};
    fresh.fork_ts = bpf_ktime_get_ns();
    fresh.parent = parent;
    if (traced.insert(&child, &fresh)) {
        count(CNT_THREADS_FULL);
        return TP_RETURN;
    }
    u8 one = 1;
    is_traced.update(&child, &one);
    return TP_RETURN;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    if (!t || frozen())
        return TP_RETURN;
    announce(t, tid, id >> 32);
    if (t->pending)
        close_wakeup(t, HERD_OUTCOME_OTHER);
    struct herd_event *e = new_event(HERD_KIND_THREAD_EXIT);
    if (e) {
        e->tid = tid;
        e->tgid = id >> 32;
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    }
    traced.delete(&tid);
    u8 zero8 = 0;
    is_traced.update(&tid, &zero8);
    return TP_RETURN;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (frozen())
        return TP_RETURN;
    if (args->protocol != PROTO_TCP)
        return TP_RETURN;
    u16 port = args->sport;
    if (args->newstate == ST_LISTEN) {
        // listen() by a traced thread runs in its context: learn its port.
        u32 tid = (u32)bpf_get_current_pid_tgid();
        if (find(tid)) {
            u8 one = 1;
            listen_ports.update(&port, &one);
        }
        return TP_RETURN;
    }
    if (args->oldstate != ST_SYN_RECV || args->newstate != ST_ESTABLISHED)
        return TP_RETURN;
    if (!listen_ports.lookup(&port))
        return TP_RETURN;
    int zero = 0;
    u64 *seq = conn_seq.lookup(&zero);
    if (!seq)
        return TP_RETURN;
    u64 conn_id = __sync_fetch_and_add(seq, 1) + 1;
    struct net_cause *c = cause.lookup(&zero);
    if (c) {
        c->conn_id = conn_id;
        c->conn_ts = bpf_ktime_get_ns();
    }
    struct herd_event *e = new_event(HERD_KIND_CONN);
    if (!e)
        return TP_RETURN;
    e->conn_id = conn_id;
    e->sk = sk_id(args->skaddr);
    e->lport = port;
    e->rport = args->dport;
    if (args->family == FAM_INET6) {
        __builtin_memcpy(&e->raddr[0], args->daddr_v6, 16);
        e->flags |= HERD_FLAG_IPV6;
    } else {
        e->raddr[10] = 0xff;
        e->raddr[11] = 0xff;
        __builtin_memcpy(&e->raddr[12], args->daddr, 4);
    }
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return TP_RETURN;
}

#ifdef HAVE_SK_DATA_READY
TRACEPOINT_PROBE(sock, sk_data_ready) {
    if (frozen())
        return TP_RETURN;
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    if (!c)
        return TP_RETURN;
    u64 now = bpf_ktime_get_ns();
    c->ready_ts = now;
    c->ready_sk = sk_id(args->skaddr);
    // A connection established just before, on this CPU, is what made the
    // listener readable; use it once.
    if (c->conn_ts && now - c->conn_ts < CAUSE_WINDOW_NS)
        c->ready_conn = c->conn_id;
    else
        c->ready_conn = 0;
    c->conn_ts = 0;
    return TP_RETURN;
}
#endif
