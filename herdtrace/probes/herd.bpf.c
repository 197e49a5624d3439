// herdtrace kernel side: one record per wakeup of a traced thread, with its outcome
// and its cause.
//
// Tracepoints only, no kprobes or fentry. Kernel structs are read only by raw
// tracepoints, at offsets from the running kernel's BTF (-D *_OFF), never through
// headers, so headers of a different kernel version are safe; the classic
// tracepoints, which read their arguments alone, are the fallback.
//
// Who writes what: the waker's CPU (sched_waking) only fills the thread's `waking`
// and then arms it; everything else about a wakeup, opening it from the armed
// waking, closing it and emitting it, happens in the thread's own context
// (sched_switch of that thread, its syscall exits, its exit). Without a lock (tracing
// programs may not take bpf_spin_lock) this is what keeps two CPUs from closing the
// same wakeup twice or emitting a half-written one.
//
// Options (-D): RAW_SCHED with TASK_PID_OFF, TASK_STATE_OFF, TASK_CPU_OFF (sched
// probes as raw tracepoints), RAW_NET with SK_*_OFF (inet_sock_set_state,
// sk_data_ready, netif_receive_skb as raw),
// RINGBUF_PAGES, PID_MAX, MAX_THREADS, MAX_CONNS, CAUSE_WINDOW_NS,
// CONN_WINDOW_NS, SK_KEY, TP_RETURN, HAVE_SK_DATA_READY (absent: the connection-state
// rule decides listener wakeups alone), CONN_STATE_CHECK (run that rule beside
// sk_data_ready, its verdict in a flag), HAVE_EPOLL_PWAIT2, NO_CONNECTIONS (with
// HAVE_SK_DATA_READY and RAW_NET: no inet_sock_set_state; see ready_cause_of),
// AGGREGATE with MAX_LISTENERS, MAX_ACCEPT_FDS (no records: counts per listener and
// per accepting socket in maps that user space reads on demand; see finish_wakeup).
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
#define MAX_THREADS 65535  // slots are u16, 0 meaning none
#endif
#ifndef MAX_CONNS
#define MAX_CONNS 65536  // accepted sockets remembered at once: a power of two
#endif
#define CPU_ID_BITS 10
#define CPU_ID_MASK ((1 << CPU_ID_BITS) - 1)
#define CONN_WAYS HERD_CONN_WAYS  // a socket's place is one of these in its set
#if MAX_CONNS < CONN_WAYS || (MAX_CONNS & (MAX_CONNS - 1))
#error MAX_CONNS must be a power of two, at least CONN_WAYS
#endif
// sk_data_ready -> the last wakeup it causes: the same call chain; the fourth of
// four select() waiters can come ~50 us after it.
#ifndef CAUSE_WINDOW_NS
#define CAUSE_WINDOW_NS HERD_CAUSE_WINDOW_NS
#endif
// SYN_RECV -> ESTABLISHED of a child -> the last wakeup the connection-state rule
// gives its listener, unless a received packet ends the run earlier. Measured on
// loopback: 1-3 us for EPOLLEXCLUSIVE, up to ~50 us for the fourth of four select()
// waiters; request data on the new connection, a later packet, wakes 20 us or more after.
#ifndef CONN_WINDOW_NS
#define CONN_WINDOW_NS HERD_CONN_WINDOW_NS
#endif
// The rule runs where it decides causes, or beside sk_data_ready to be checked against it.
#if !defined(HAVE_SK_DATA_READY) || defined(CONN_STATE_CHECK)
#define WITH_CONN_STATE_RULE 1
#endif
// A classic tracepoint's BPF program decides, by returning non-zero, whether the
// event still reaches perf. 0 (as bcc's tools and bpftrace) is cheaper but empties
// a `perf record` of the same tracepoints running beside herdtrace;
// `record --let-perf-see` passes 1.
#ifndef TP_RETURN
#define TP_RETURN 0
#endif
// `make bench-perf`'s ablation: where herdtrace's cost goes. EMPTY: every probe
// returns at once (what attaching costs); FILTER: each probe finds whether the event
// is about a traced thread or socket, then returns; STATE: all but the records;
// EMPTY_COUNTING: EMPTY on only the tracepoints a counting script needs (the wait
// syscalls and sched_waking), not those for causes and thread following.
#define ABLATE_NONE 0
#define ABLATE_EMPTY 1
#define ABLATE_FILTER 2
#define ABLATE_STATE 3
#define ABLATE_EMPTY_COUNTING 4
#ifndef ABLATE
#define ABLATE ABLATE_NONE
#endif
#define ONLY_ATTACHED() if (ABLATE == ABLATE_EMPTY || ABLATE == ABLATE_EMPTY_COUNTING) return TP_RETURN
#define BEYOND_COUNTING (ABLATE != ABLATE_EMPTY_COUNTING)
#define ONLY_FILTERED(...) if (ABLATE == ABLATE_FILTER) return __VA_ARGS__
#if defined(NO_CONNECTIONS) && (!defined(HAVE_SK_DATA_READY) || !defined(RAW_NET) || defined(CONN_STATE_CHECK))
#error NO_CONNECTIONS decides causes from sk_data_ready and the socket's own state alone
#endif

#ifndef SK_KEY
#define SK_KEY 0x5bd1e995ULL
#endif

#define ST_ESTABLISHED 1
#define ST_SYN_RECV 3
#define ST_FIN_WAIT2 5
#define ST_TIME_WAIT 6
#define ST_CLOSE 7
#define ST_CLOSE_WAIT 8
#define ST_LISTEN 10
#define ST_CLOSING 11
#define PROTO_TCP 6
#define FAM_INET 2
#define FAM_INET6 10
// sched_switch prev_state bits (TASK_REPORT): interruptible, uninterruptible.
#define SLEEP_INTERRUPTIBLE 1
#define SLEEP_UNINTERRUPTIBLE 2

// Stores before it are not moved after it (ordering across CPUs comes from the
// scheduler's own locks between a waking and the woken thread's next run).
#define compiler_barrier() asm volatile("" ::: "memory")

// An array index no larger than `last`, in a form Linux 6.1's verifier follows: the
// compiler otherwise bounds one zero-extended copy of a u32 index and indexes with
// another, which 6.1 rejects ("unbounded memory access": the exporter and top did
// not load there). The empty asm makes the bounded register the one used.
static __always_inline u64 index_upto(u64 i, u64 last) {
    asm volatile("" : "+r"(i));  // 64-bit: no zero-extended copy to bound instead
    return i < last ? i : last;
}

#ifdef RAW_SCHED
// A task's CPU and sleep state: one read where they are neighbours (a helper call
// costs more than the bytes), as in Linux 5.14+, else one each.
static __always_inline void read_task_cpu_state(const u8 *task, u32 *cpu, u32 *state) {
#if TASK_STATE_OFF == TASK_CPU_OFF + 4 || TASK_CPU_OFF == TASK_STATE_OFF + 4
    u32 pair[2] = {};
    bpf_probe_read_kernel(pair, sizeof(pair), task + (TASK_CPU_OFF < TASK_STATE_OFF ? TASK_CPU_OFF : TASK_STATE_OFF));
    *cpu = pair[TASK_CPU_OFF > TASK_STATE_OFF];
    *state = pair[TASK_STATE_OFF > TASK_CPU_OFF];
#else
    bpf_probe_read_kernel(cpu, sizeof(*cpu), task + TASK_CPU_OFF);
    bpf_probe_read_kernel(state, sizeof(*state), task + TASK_STATE_OFF);
#endif
}
#endif

#ifdef RAW_NET
// The head of a socket's sock_common: peer address and port, local port, family,
// state. One read where they lie within SK_HEAD_LEN bytes of the first (every
// Linux so far: they open the struct), else one each.
#define SK_HEAD_LEN 24
#define SK_HEAD_OFF SK_DADDR_OFF
#define SK_IN_HEAD(off, size) ((off) >= SK_HEAD_OFF && (off) + (size) <= SK_HEAD_OFF + SK_HEAD_LEN)
struct sk_head {
    u8 daddr[4];
    u16 dport_be;
    u16 num;
    u16 family;
    u8 state;
};

static __always_inline void read_sk_head(const u8 *sk, struct sk_head *h) {
#if SK_IN_HEAD(SK_DPORT_OFF, 2) && SK_IN_HEAD(SK_NUM_OFF, 2) && SK_IN_HEAD(SK_FAMILY_OFF, 2) && \
    SK_IN_HEAD(SK_STATE_OFF, 1)
    u8 b[SK_HEAD_LEN] = {};
    bpf_probe_read_kernel(b, sizeof(b), sk + SK_HEAD_OFF);
    __builtin_memcpy(h->daddr, b, 4);
    __builtin_memcpy(&h->dport_be, b + (SK_DPORT_OFF - SK_HEAD_OFF), 2);
    __builtin_memcpy(&h->num, b + (SK_NUM_OFF - SK_HEAD_OFF), 2);
    __builtin_memcpy(&h->family, b + (SK_FAMILY_OFF - SK_HEAD_OFF), 2);
    h->state = b[SK_STATE_OFF - SK_HEAD_OFF];
#else
    bpf_probe_read_kernel(h->daddr, 4, sk + SK_DADDR_OFF);
    bpf_probe_read_kernel(&h->dport_be, 2, sk + SK_DPORT_OFF);
    bpf_probe_read_kernel(&h->num, 2, sk + SK_NUM_OFF);
    bpf_probe_read_kernel(&h->family, 2, sk + SK_FAMILY_OFF);
    bpf_probe_read_kernel(&h->state, 1, sk + SK_STATE_OFF);
#endif
}
#endif


// A waking, written by the waker's CPU; `armed` is written last and cleared by the
// thread's own context once it has taken the rest.
struct waking {
    u64 ts;
    u64 sk;
    u64 conn_id;
    u32 waker_tid;
    u32 waker_tgid;
    u16 cpu;
    u16 target_cpu;
    u16 lport;
    u8 cause;
    u8 basis;
    u8 flags;
    u8 sleep;           // HERD_SLEPT_*: the state it was woken from, where the probe can read it
    u8 armed;
};

// Per traced thread: identity, the wait syscall it is in, its open wakeup.
struct traced_thread {
    u64 fork_ts;
    u64 enter_ts;
    u64 accept_buf;     // user sockaddr pointer passed to accept
    u64 oncpu;          // on a CPU since (for the open wakeup's cpu_ns); 0: off CPU
    u64 oncpu_rt;       // the kernel's run time of the thread then (raw sched_switch); 0: unknown
    u32 tid;            // whose slot this is (0: free)
    u32 tgid;           // 0 until the thread runs in its own context
    u32 parent;
    s32 wait_fd;
    u8 wait_call;       // HERD_CALL_*, NONE outside a wait syscall
    u8 pending;         // `wakeup` is open: its outcome is not known yet
    u8 returned;        // the woken wait has returned to user space
    u8 slept;           // HERD_SLEPT_*: how it last left the CPU
    u8 undecided;       // `wakeup` was taken as it went to sleep: see on_switch
    struct waking waking;
    struct herd_event wakeup;
};

// What the network stack just did on this CPU, to tie wakeups to their cause.
struct net_cause {
    u64 conn_ts;        // last child SYN_RECV -> ESTABLISHED on a traced listener
    u64 conn_id;
    u64 conn_sk;        // its kernel address (compared, never stored)
    u64 conn_waker;     // pid_tgid of the task that ran it
    u64 chain_ts;       // conn_ts until the next packet is received on this CPU, then 0
    u64 ready_ts;       // last sock:sk_data_ready
    u64 ready_raw;      // its kernel address (compared, never stored)
    u64 ready_sk;       // keyed hash of that socket
    u64 ready_conn;
    u64 ready_waker;
    u16 conn_port;
    u16 ready_port;
    u64 ready_seq;      // listener readiness events numbered on this CPU (NO_CONNECTIONS)
    u8 ready_cause;     // NONE: not decided yet (see ready_cause_of)
    u8 conn_used;       // the connection has already been tied to its listener
    u16 agg_port;       // AGGREGATE: the listener of the readiness event being counted
    u32 agg_woken;      // AGGREGATE: threads it has woken so far
};

// Traced threads live in array slots, found through a flat array indexed by tid
// (1 + their slot, 0: untraced): array lookups are inlined by the verifier, where a
// hash lookup is a helper call, and most events are of untraced threads. Free slots
// wait in a queue, filled by user space at load.
// Mappable: user space reads which slots are used without a syscall per slot.
BPF_F_TABLE("array", u32, struct traced_thread, traced, MAX_THREADS, BPF_F_MMAPABLE);
BPF_ARRAY(is_traced, u16, PID_MAX);
BPF_QUEUE(free_slots, u16, MAX_THREADS);
// Ports of the traced listeners (1: traced), indexed by port: an array lookup is
// inlined, a hash lookup is a helper call (~60 ns a connection's wakeup, measured).
// Mappable: user space reads which are set without a syscall per port.
#define PORTS 65536  // collectors/maps.py maps it: the same size there
BPF_F_TABLE("array", u32, u64, listen_ports, PORTS, BPF_F_MMAPABLE);  // u64: the map's stride anyway
// Sockets accepted on a traced listener (kernel address -> conn_id), until closed:
// a set-associative table in an array (no helper call, no lock; a hash map's update
// and delete were a third of inet_sock_set_state's time). A socket's set is CONN_WAYS
// slots from its hashed address; a full set gives up its oldest connection.
struct conn_slot {
    u64 sk;             // kernel address (compared, never stored in a record); 0: free
    u64 conn_id;
};
BPF_ARRAY(conns, struct conn_slot, MAX_CONNS);
BPF_ARRAY(conn_seq, u64, 1);
BPF_PERCPU_ARRAY(cause, struct net_cause, 1);
BPF_PERCPU_ARRAY(counters, u64, HERD_CNT_NUM);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

#ifdef AGGREGATE
#ifndef MAX_LISTENERS
#define MAX_LISTENERS 4096
#endif
#ifndef MAX_ACCEPT_FDS
#define MAX_ACCEPT_FDS 16384
#endif
#define LATENCY_BUCKETS 32  // wake latency, log2 of ns: bucket b holds [2^b, 2^(b+1))
#define WOKEN_BUCKETS 9     // threads one readiness event woke: 0..7, and 8 or more
#define CALLS (HERD_CALL_KEVENT + 1)  // listener wakeups by the wait they came out of
// Per listening port, per CPU (no atomics on the hot path), summed by user space.
struct listener_counts {
    u64 wakeups;          // listener wakeups, counted once their outcome is known
    u64 idle;             // of them absorbed or eagain (woken for nothing)
    u64 eagain;           // of them eagain
    u64 cpu_ns;           // their on-CPU time
    u64 idle_cpu_ns;      // the idle ones'
    u64 latency_ns;       // sum of their wake latencies (those seen on a CPU)
    u64 connections;      // children established on the port
    u64 readiness;        // readiness events counted in woken[]
    u64 woken_sum;        // threads they woke, summed
    u64 woken[WOKEN_BUCKETS];
    u64 latency[LATENCY_BUCKETS];
    u64 by_call[CALLS];
};
struct accept_key {
    u32 tgid;
    s32 fd;
};
struct accept_counts {
    u64 accepts;          // accept() calls that returned a connection
    u64 eagain;           // accept() calls that returned EAGAIN
};
BPF_PERCPU_HASH(by_listener, u32, struct listener_counts, MAX_LISTENERS);
BPF_PERCPU_HASH(by_accept_fd, struct accept_key, struct accept_counts, MAX_ACCEPT_FDS);
// All zero, read-only: the initial value of a new entry, off the 512-byte stack.
BPF_ARRAY(blank_listener, struct listener_counts, 1);
#endif
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
    u16 *slot = is_traced.lookup(&tid);
    if (!slot || !*slot)
        return 0;
    u32 i = *slot - 1;
    struct traced_thread *t = traced.lookup(&i);
    return t && t->tid == tid ? t : 0;
}

static __always_inline u64 *port_entry(u16 port) {
    u32 key = port;
    return listen_ports.lookup(&key);
}

static __always_inline int traced_port(u16 port) {
    u64 *known = port_entry(port);
    return known && *known;
}

static __always_inline void count(int idx) {
    u64 *c = counters.lookup(&idx);
    if (c)
        (*c)++;
}

#ifdef AGGREGATE
static __always_inline struct listener_counts *listener_entry(u16 port) {
    int zero = 0;
    struct listener_counts *blank = blank_listener.lookup(&zero);
    if (!blank)
        return 0;
    u32 key = port;
    struct listener_counts *n = by_listener.lookup_or_try_init(&key, blank);
    if (!n)
        count(HERD_CNT_UNCOUNTED);
    return n;
}

// Threads woken per connection, counted in the waker's call chain: a listener's
// readiness event (its child queued) opens a count on this CPU, each waking it
// causes there adds one, the next event closes it. A worker that wakes the next
// waiter of a shared epoll later is not in it (record's per-connection count is).
static __always_inline void readiness_close(u16 port, u32 woken) {
    struct listener_counts *n = listener_entry(port);
    if (!n)
        return;
    n->readiness++;
    n->woken_sum += woken;
    n->woken[index_upto(woken, WOKEN_BUCKETS - 1)]++;
}

static __always_inline void readiness_open(u16 *agg_port, u32 *agg_woken, u16 port) {
    if (*agg_port)
        readiness_close(*agg_port, *agg_woken);
    *agg_port = port;
    *agg_woken = 0;
}
#endif

// Kernel addresses stay out of recordings: a keyed bijective mix keeps identity only.
static __always_inline u64 sk_id(const void *sk) {
    u64 x = (u64)sk ^ SK_KEY;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static __always_inline u32 conn_set(u64 skaddr) {
    return (u32)sk_id((const void *)skaddr) & (MAX_CONNS - CONN_WAYS);
}

static __always_inline struct conn_slot *conn_find(u64 skaddr) {
    u32 base = conn_set(skaddr);
#pragma unroll
    for (u32 way = 0; way < CONN_WAYS; way++) {
        u32 i = base + way;
        struct conn_slot *c = conns.lookup(&i);
        if (c && c->sk == skaddr)
            return c;
    }
    return 0;
}

// A child established: its own entry (a close not seen, the memory reused), else a
// free one, claimed atomically (two CPUs may establish children in the same set at
// once), else its set's oldest connection. One pass over the set.
static __always_inline void conn_add(u64 skaddr, u64 conn_id) {
    u32 base = conn_set(skaddr);
    struct conn_slot *free = 0, *oldest = 0;
#pragma unroll
    for (u32 way = 0; way < CONN_WAYS; way++) {
        u32 i = base + way;
        struct conn_slot *c = conns.lookup(&i);
        if (!c)
            continue;
        if (c->sk == skaddr) {
            c->conn_id = conn_id;
            return;
        }
        if (!c->sk) {
            if (!free)
                free = c;
        } else if (!oldest || c->conn_id < oldest->conn_id) {
            oldest = c;
        }
    }
    if (free && __sync_val_compare_and_swap(&free->sk, 0, skaddr) == 0) {
        free->conn_id = conn_id;
        return;
    }
    // The set is full, or another CPU took its free entry this instant.
    struct conn_slot *victim = oldest ? oldest : free;
    if (victim) {
        count(HERD_CNT_CONNS_EVICTED);
        victim->sk = skaddr;
        victim->conn_id = conn_id;
    }
}

static __always_inline void emit(const struct herd_event *src) {
    if (ABLATE == ABLATE_STATE)
        return;
    struct herd_event *e = events.ringbuf_reserve(sizeof(struct herd_event));
    if (!e) {
        count(HERD_CNT_LOST_EVENTS);
        return;
    }
    __builtin_memcpy(e, src, sizeof(struct herd_event));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline struct herd_event *new_event(u8 kind, u64 now) {
#ifdef AGGREGATE
    return 0;  // no records cross to user space
#endif
    if (ABLATE == ABLATE_STATE)
        return 0;
    struct herd_event *e = events.ringbuf_reserve(sizeof(struct herd_event));
    if (!e) {
        count(HERD_CNT_LOST_EVENTS);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(struct herd_event));
    e->kind = kind;
    e->ts = now;
    e->cpu = bpf_get_smp_processor_id();
    return e;
}

// The fields a wakeup and an accept both take from the thread's current wait.
static __always_inline void from_wait(struct herd_event *e, struct traced_thread *t, u32 tid) {
    e->tid = tid;
    e->tgid = t->tgid;
    e->fd = t->wait_fd;
    e->enter_ts = t->enter_ts;
    e->wait_call = t->wait_call;
}

// Called in the thread's own context: learn its process, say it exists.
static __always_inline void announce(struct traced_thread *t, u32 tid, u32 tgid) {
    if (t->tgid)
        return;
    t->tgid = tgid;
    struct herd_event *e = new_event(HERD_KIND_THREAD, t->fork_ts);
    if (!e)
        return;
    e->tid = tid;
    e->tgid = tgid;
    e->other_tid = t->parent;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

// A wakeup whose outcome is known: its record, or (AGGREGATE) its listener's counts.
static __always_inline void finish_wakeup(const struct herd_event *w) {
#ifdef AGGREGATE
    if (w->cause != HERD_CAUSE_LISTENER)
        return;
    struct listener_counts *n = listener_entry(w->lport);
    if (!n)
        return;
    n->wakeups++;
    n->cpu_ns += w->cpu_ns;
    n->by_call[w->wait_call < CALLS ? index_upto(w->wait_call, CALLS - 1) : 0]++;
    if (w->outcome == HERD_OUTCOME_ABSORBED || w->outcome == HERD_OUTCOME_EAGAIN) {
        n->idle++;
        n->idle_cpu_ns += w->cpu_ns;
        if (w->outcome == HERD_OUTCOME_EAGAIN)
            n->eagain++;
    }
    if (w->oncpu_ts > w->ts) {
        u64 lat = w->oncpu_ts - w->ts;
        u32 b = bpf_log2l(lat);
        n->latency[index_upto(b, LATENCY_BUCKETS - 1)]++;
        n->latency_ns += lat;
    }
#else
    emit(w);
#endif
}

static __always_inline void add_cpu(struct traced_thread *t, u64 spent) {
    if (!t->pending)
        return;
    u64 sum = t->wakeup.cpu_ns + spent;
    t->wakeup.cpu_ns = sum > 0xffffffffULL ? 0xffffffffU : (u32)sum;
}

// Own context: the open wakeup's on-CPU time up to `now` (the thread has been on a
// CPU since t->oncpu), counted from `now` on for whatever comes next. The kernel's
// run time is read only at a switch: until then it moves the stint's start on by
// the clock's time.
static __always_inline void charge(struct traced_thread *t, u64 now) {
    if (t->oncpu) {
        add_cpu(t, now - t->oncpu);
        if (t->oncpu_rt)
            t->oncpu_rt += now - t->oncpu;
    }
    t->oncpu = now;
}

// Switched out at `now`, with the kernel's run time `rt` (0: not read): the stint's
// time is the run time's step where both ends were read (what schedstat counts: the
// switch's own part included, a vCPU's stolen time left out), else the clock's.
static __always_inline void charge_stint(struct traced_thread *t, u64 now, u64 rt) {
    if (rt && t->oncpu_rt)
        add_cpu(t, rt > t->oncpu_rt ? rt - t->oncpu_rt : 0);
    else
        add_cpu(t, now - t->oncpu);
    t->oncpu = 0;
    t->oncpu_rt = 0;
}

// The outcome rule (also in schema.outcome_of for wakeups still open at the end).
static __always_inline void close_wakeup(struct traced_thread *t, u8 unreturned_outcome) {
    struct herd_event *w = &t->wakeup;
    if (t->oncpu)  // closed in its own context on a CPU: its time so far
        charge(t, bpf_ktime_get_ns());
    if (!t->returned)
        w->outcome = unreturned_outcome;
    else if (w->accepts)
        w->outcome = HERD_OUTCOME_ACCEPTED;
    else if (w->eagains)
        w->outcome = HERD_OUTCOME_EAGAIN;
    else
        w->outcome = HERD_OUTCOME_OTHER;
    finish_wakeup(w);
    t->pending = 0;
}

// Own context: a new wakeup of the thread, from `ts`, after closing the one before.
static __always_inline struct herd_event *open_wakeup(struct traced_thread *t, u32 tid, u64 ts) {
    if (t->pending)
        close_wakeup(t, HERD_OUTCOME_OTHER);
    struct herd_event *w = &t->wakeup;
    __builtin_memset(w, 0, sizeof(*w));
    w->kind = HERD_KIND_WAKEUP;
    w->ts = ts;
    from_wait(w, t, tid);
    t->pending = 1;
    t->returned = 0;
    return w;
}

// A waking that came before the thread could sleep (the classic tracepoint does not
// say in which state it was about to sleep): inside accept after a wakeup that has
// returned, and not caused by a listener, it is the socket lock's release (accept4
// of a non-blocking listener sleeps only on that lock), not a new wakeup.
static __always_inline int lock_race(const struct traced_thread *t) {
    return t->slept == HERD_SLEPT_NONE && t->pending && t->returned &&
           (t->wait_call == HERD_CALL_ACCEPT || t->wait_call == HERD_CALL_ACCEPT4) &&
           t->waking.cause != HERD_CAUSE_LISTENER;
}

// Own context: turn the armed waking, if any, into the open wakeup. `oncpu` is
// when the thread got the CPU after it (now at switch-in; the waking itself
// when the thread was woken before it slept). Returns whether it opened one.
static __always_inline int take_waking(struct traced_thread *t, u32 tid, u64 oncpu) {
    struct waking *k = &t->waking;
    if (!k->armed)
        return 0;
    int opened = 0;
    int lock = k->sleep == HERD_SLEPT_UNKNOWN ? (t->slept == HERD_SLEPT_UNINTR || lock_race(t))
                                         : k->sleep == HERD_SLEPT_UNINTR;
    if (lock) {
        // The end of a lock's sleep inside the wait: it belongs to the wakeup (if any)
        // that led there and must not steal its accept or EAGAIN.
        count(HERD_CNT_WAKINGS_UNINTERRUPTIBLE);
    } else if (t->pending && !t->returned) {
        count(HERD_CNT_WAKINGS_MERGED);
    } else {
        struct herd_event *w = open_wakeup(t, tid, k->ts);
        opened = 1;
        w->oncpu_ts = oncpu;
        w->sk = k->sk;
        w->conn_id = k->conn_id;
        w->other_tid = k->waker_tid;
        w->other_tgid = k->waker_tgid;
        w->lport = k->lport;
        w->cpu = k->cpu;
        w->target_cpu = k->target_cpu;
        w->flags = k->flags;
        w->cause = k->cause;
        w->cause_basis = k->basis;
    }
    compiler_barrier();
    k->armed = 0;
    return opened;
}

// Own context, back from a sleep whose switch-out left its wakeup undecided
// (on_switch): the waking taken then either ended that sleep (nothing armed since:
// it goes on, on a CPU from `oncpu`, 0 if not seen) or was absorbed (the thread
// slept again and a new waking is armed).
static __always_inline void settle(struct traced_thread *t, u64 oncpu) {
    if (!t->undecided)
        return;
    t->undecided = 0;
    if (t->waking.armed) {
        close_wakeup(t, HERD_OUTCOME_ABSORBED);
        return;
    }
    t->wakeup.oncpu_ts = oncpu;
    t->slept = HERD_SLEPT_NONE;
}

// Own context, with no waking armed (the callers' condition): a thread back from an
// interruptible sleep inside
// a wait was woken all the same, and the kernel did not run the waking's programs.
// Seen under CPU contention: a timer's waking from an interrupt, which bpftrace missed
// too while ftrace recorded it, with no recursion miss counted. The wakeup is kept,
// from `now`; what only the waking could tell (waker, cause, wake latency) is unknown.
static __always_inline void infer_waking(struct traced_thread *t, u32 tid, u64 now) {
    if (t->slept != HERD_SLEPT_INTR || !t->wait_call)
        return;
    count(HERD_CNT_WAKINGS_UNSEEN);
    struct herd_event *w = open_wakeup(t, tid, now);
    u16 cpu = bpf_get_smp_processor_id();
    w->cpu = cpu;
    w->target_cpu = cpu;
    w->flags = HERD_FLAG_WAKING_UNSEEN;
    w->cause = HERD_CAUSE_UNKNOWN;
}

static __always_inline void wait_enter(u8 call, s32 fd, u64 buf) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    ONLY_FILTERED();
    if (!t || frozen())
        return;
    announce(t, tid, id >> 32);
    t->wait_call = call;
    t->wait_fd = fd;
    t->enter_ts = bpf_ktime_get_ns();
    t->accept_buf = buf;
}

static __always_inline void emit_accept(struct traced_thread *t, u32 tid, s32 ret, u64 now) {
#ifdef AGGREGATE
    if (ret < 0 && ret != -HERD_EAGAIN)
        return;
    struct accept_key key = {.tgid = t->tgid, .fd = t->wait_fd};
    struct accept_counts blank = {};
    struct accept_counts *n = by_accept_fd.lookup_or_try_init(&key, &blank);
    if (!n) {
        count(HERD_CNT_UNCOUNTED);
        return;
    }
    if (ret >= 0)
        n->accepts++;
    else
        n->eagain++;
    return;
#endif
    struct herd_event *e = new_event(HERD_KIND_ACCEPT, now);
    if (!e)
        return;
    from_wait(e, t, tid);
    e->ret = ret;
    if (ret >= 0 && t->accept_buf) {
        // The sockaddr's first 8 bytes (family, port, IPv4 address) in one read;
        // an IPv6 address follows them.
        const u8 *ubuf = (const u8 *)t->accept_buf;
        struct { u16 family; u16 port_be; u8 addr4[4]; } head = {};
        bpf_probe_read_user(&head, sizeof(head), ubuf);
        if (head.family == FAM_INET) {
            e->raddr[10] = 0xff;
            e->raddr[11] = 0xff;
            __builtin_memcpy(&e->raddr[12], head.addr4, 4);
            e->flags |= HERD_FLAG_PEER;
        } else if (head.family == FAM_INET6) {
            bpf_probe_read_user(&e->raddr[0], 16, ubuf + 8);
            e->flags |= HERD_FLAG_PEER | HERD_FLAG_IPV6;
        }
        e->rport = (head.port_be >> 8) | ((head.port_be & 0xff) << 8);
    }
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void wait_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    ONLY_FILTERED();
    if (!t || !t->wait_call || frozen())
        return;
    announce(t, tid, id >> 32);
    if (!t->oncpu)  // on a CPU since before recording began
        t->oncpu = bpf_ktime_get_ns();
    settle(t, 0);  // its switch-in was not seen
    int woken = t->waking.armed;
    take_waking(t, tid, t->waking.ts);  // woken before it ever slept
    u64 now = bpf_ktime_get_ns();
    if (!woken)
        infer_waking(t, tid, now);  // neither its waking nor its switch-in seen
    t->slept = HERD_SLEPT_NONE;
    u8 call = t->wait_call;
    if (call == HERD_CALL_ACCEPT || call == HERD_CALL_ACCEPT4) {
        emit_accept(t, tid, (s32)ret, now);
        if (t->pending) {
            if (ret >= 0)
                t->wakeup.accepts++;
            else if (ret == -HERD_EAGAIN)
                t->wakeup.eagains++;
        }
    }
    if (t->pending && !t->returned) {
        t->returned = 1;
        t->wakeup.ret_ts = now;
        t->wakeup.ret = (s32)ret;
    }
    t->wait_call = HERD_CALL_NONE;
}

#define WAIT_SYSCALL(name, call, fdexpr, bufexpr)             \
    TRACEPOINT_PROBE(syscalls, sys_enter_##name) {            \
        ONLY_ATTACHED();                                      \
        wait_enter(call, (s32)(fdexpr), (u64)(bufexpr));      \
        return TP_RETURN;                                     \
    }                                                         \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) {             \
        ONLY_ATTACHED();                                      \
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

#ifdef HAVE_SK_DATA_READY
// sk_data_ready fires for every readable socket on the machine, most of which wake
// no traced thread: which connection it was is looked up only once a traced thread
// is woken by it, and kept for the other wakings it causes.
static __always_inline u8 ready_cause_of(struct net_cause *c) {
    if (c->ready_cause != HERD_CAUSE_NONE)
        return c->ready_cause;
    u64 skaddr = c->ready_raw;
    c->ready_sk = sk_id((const void *)skaddr);
#ifdef NO_CONNECTIONS
    // No connection table: a listening socket is read as such, and each of its
    // readiness events (one per child queued: tcp_child_process) gets the next
    // connection id; a socket on a traced listener's port is one of its connections.
    // Any listening socket, traced or not: a server started by `-- CMD` listens
    // before its port is read from /proc (docs/DESIGN-DECISIONS.md, sixteenth
    // session, on what that lets through).
    struct sk_head h = {};
    read_sk_head((const u8 *)skaddr, &h);
    u16 port = h.num;
    if (h.state == ST_LISTEN) {
        // Ids from this CPU's own count (no shared counter to contend for): unique
        // per recording, below the 2^40 analysis adds per combined recording.
        c->ready_cause = HERD_CAUSE_LISTENER;
        c->ready_conn = (++c->ready_seq << CPU_ID_BITS) | (bpf_get_smp_processor_id() & CPU_ID_MASK);
        c->ready_port = port;
#ifdef AGGREGATE
        readiness_open(&c->agg_port, &c->agg_woken, port);
#endif
    } else {
        c->ready_cause = traced_port(port) ? HERD_CAUSE_CONNECTION : HERD_CAUSE_SOCKET;
        c->ready_conn = 0;
        c->ready_port = 0;
    }
    return c->ready_cause;
#endif
    struct conn_slot *conn = conn_find(skaddr);
    c->ready_cause = conn ? HERD_CAUSE_CONNECTION : HERD_CAUSE_SOCKET;
    c->ready_conn = conn ? conn->conn_id : 0;
    c->ready_port = 0;
    return c->ready_cause;
}
#endif

// The cause of a waking, from what the network stack did just before on this CPU,
// in the waker's own context (same task, within the window).
// A worker returning from epoll_wait with a level-triggered listener still ready
// wakes the next waiter of that epoll instance itself (ep_send_events re-queues the
// item, and wakes the queue): one epoll shared by several workers spreads the herd
// this way, with no sk_data_ready. The waker is then a traced thread inside an
// epoll wait whose own wakeup was the listener's: the woken one's is too.
static __always_inline int epoll_rewake(struct waking *k, u64 id) {
    struct traced_thread *w = find((u32)id);
    if (!w || !w->pending || w->wakeup.cause != HERD_CAUSE_LISTENER)
        return 0;
    u8 call = w->wait_call;
    if (call != HERD_CALL_EPOLL_WAIT && call != HERD_CALL_EPOLL_PWAIT &&
        call != HERD_CALL_EPOLL_PWAIT2)
        return 0;
    k->cause = HERD_CAUSE_LISTENER;
    k->sk = w->wakeup.sk;
    k->conn_id = w->wakeup.conn_id;
    k->lport = w->wakeup.lport;
    k->flags |= HERD_FLAG_EPOLL_REWAKE | (w->wakeup.flags & HERD_FLAG_CONN_STATE_LISTENER);
    return 1;
}

static __always_inline void classify(struct waking *k, u64 now, u64 id) {
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    if (!c)
        return;
#ifdef WITH_CONN_STATE_RULE
    // The connection-state rule: after a child is established on a traced listener,
    // the wakings by the same task on this CPU, until the next packet is received
    // there (net:netif_receive_skb ends the run), are the listener's. A time bound
    // guards against a run that nothing ends.
    int conn_recent = c->chain_ts && now - c->chain_ts < CONN_WINDOW_NS && c->conn_waker == id;
    if (conn_recent)
        k->flags |= HERD_FLAG_CONN_STATE_LISTENER;
#endif
#ifdef HAVE_SK_DATA_READY
    k->basis = HERD_BASIS_SK_DATA_READY;
    if (c->ready_ts && now - c->ready_ts < CAUSE_WINDOW_NS && c->ready_waker == id) {
        k->flags |= HERD_FLAG_NET_CAUSE;
        k->cause = ready_cause_of(c);
        k->sk = c->ready_sk;
        k->conn_id = c->ready_conn;
        k->lport = c->ready_port;
#ifdef AGGREGATE
        if (k->cause == HERD_CAUSE_LISTENER)
            c->agg_woken++;
#endif
    } else if (!epoll_rewake(k, id)) {
        k->cause = HERD_CAUSE_OTHER;  // no socket became readable (analysis finds timeouts)
    }
#else
    k->basis = HERD_BASIS_CONN_STATE;
    if (conn_recent) {
        k->cause = HERD_CAUSE_LISTENER;
        k->conn_id = c->conn_id;
        k->lport = c->conn_port;
#ifdef AGGREGATE
        c->agg_woken++;
#endif
    } else if (c->ready_ts && now - c->ready_ts < CAUSE_WINDOW_NS && c->ready_waker == id) {
        k->cause = c->ready_cause;  // a state change (a peer's FIN) of an accepted socket
        k->sk = c->ready_sk;
        k->conn_id = c->ready_conn;
    } else if (!epoll_rewake(k, id)) {
        k->cause = HERD_CAUSE_UNKNOWN;
    }
#endif
}

// A traced thread inside a wait is being woken (waker's context). `task` is its
// task_struct where the raw tracepoint gives it (its state and CPU are read then),
// else 0 and the classic tracepoint's target CPU.
static __always_inline void on_waking(u32 tid, const u8 *task, u16 classic_cpu) {
    struct traced_thread *t = find(tid);
    ONLY_FILTERED();
    if (!t || !t->wait_call || frozen())
        return;
    struct waking *k = &t->waking;
    if (k->armed) {
        // Woken again before it took the first: one wakeup.
        count(HERD_CNT_WAKINGS_MERGED);
        return;
    }
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    k->ts = now;
    k->waker_tid = (u32)id;
    k->waker_tgid = id >> 32;
    k->cpu = bpf_get_smp_processor_id();
    k->target_cpu = classic_cpu;
    k->sleep = HERD_SLEPT_UNKNOWN;
#ifdef RAW_SCHED
    u32 cpu = 0;
    u32 state = 0;
    read_task_cpu_state(task, &cpu, &state);
    k->target_cpu = cpu;
    k->sleep = (state & SLEEP_UNINTERRUPTIBLE) ? HERD_SLEPT_UNINTR
             : (state & SLEEP_INTERRUPTIBLE) ? HERD_SLEPT_INTR : HERD_SLEPT_NONE;
#endif
    k->sk = 0;
    k->conn_id = 0;
    k->lport = 0;
    k->flags = 0;
    if ((u32)id == 0)
        k->flags |= HERD_FLAG_WAKER_IDLE;
    classify(k, now, id);
    compiler_barrier();
    k->armed = 1;
}

#ifdef RAW_SCHED
// A task's run time as the kernel counts it (se.sum_exec_runtime): current for prev
// at the switch tracepoint (updated as it left the run queue or was put back), and
// for next, where it stopped when it last left a CPU.
static __always_inline u64 task_runtime(const u8 *task) {
    u64 ns = 0;
    if (task)
        bpf_probe_read_kernel(&ns, sizeof(ns), task + TASK_RUNTIME_OFF);
    return ns;
}
#else
#define task_runtime(task) 0
#endif

// A context switch (on that CPU): prev leaves in `state` (HERD_SLEPT_*), next arrives.
// The tasks are given where the raw tracepoint hands them over (their run time is
// read then), else 0.
static __always_inline void on_switch(u32 prev, u8 state, u32 next,
                                      const u8 *prev_task, const u8 *next_task) {
    // The hottest probe: one lookup per side, most of them misses.
    struct traced_thread *t = find(prev);
    if (ABLATE == ABLATE_FILTER) {
        find(next);
        return;
    }
    // One clock for both sides: the switch's own time (this probe's included) is the
    // next thread's, as the kernel's run time (schedstat) counts it.
    u64 now = 0;
    if (t && !frozen()) {
        announce(t, prev, bpf_get_current_pid_tgid() >> 32);
        now = bpf_ktime_get_ns();
        if (t->oncpu)  // off the CPU: the open wakeup's time stops here
            charge_stint(t, now, task_runtime(prev_task));
        int asleep = state == HERD_SLEPT_INTR && t->wait_call;
        // Blocking again inside a wait ends the open wakeup: a woken wait that
        // never returned was absorbed.
        if (asleep && t->pending)
            close_wakeup(t, HERD_OUTCOME_ABSORBED);
        // A waking armed now came while the thread was still on the CPU, or ran on
        // another CPU after it decided to sleep and before this probe (the waker then
        // waits for the switch to finish), and so ends this very sleep. Which of the
        // two it was is known when the thread is back (settle).
        if (take_waking(t, prev, t->waking.ts) && asleep)
            t->undecided = 1;
        t->slept = state;
    }
    t = find(next);
    if (t && !frozen()) {
        if (!now)
            now = bpf_ktime_get_ns();
        t->oncpu = now;
        t->oncpu_rt = task_runtime(next_task);
        if (t->undecided || t->waking.armed || t->slept == HERD_SLEPT_INTR) {
            settle(t, now);
            if (t->waking.armed)
                take_waking(t, next, now);
            else
                infer_waking(t, next, now);
        }
        t->slept = HERD_SLEPT_NONE;
    }
}

static __always_inline u8 slept_as(long state) {
    return (state & SLEEP_INTERRUPTIBLE) ? HERD_SLEPT_INTR
         : (state & SLEEP_UNINTERRUPTIBLE) ? HERD_SLEPT_UNINTR : HERD_SLEPT_NONE;
}

#ifdef RAW_SCHED
// Raw tracepoints: no record is built for the event (the classic tracepoint copies
// its fields for every switch on the machine), and the kernel guards recursion per
// program rather than per CPU, so an interrupt during another probe is not a miss.
// Fields are read at the running kernel's offsets (-D TASK_*_OFF, from its BTF).
static __always_inline u32 task_pid(const u8 *task) {
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), task + TASK_PID_OFF);
    return pid;
}

RAW_TRACEPOINT_PROBE(sched_waking) {
    ONLY_ATTACHED();
    const u8 *task = (const u8 *)ctx->args[0];
    on_waking(task_pid(task), task, 0);
    return 0;
}

#if BEYOND_COUNTING
// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
//          unsigned int prev_state), Linux 5.18+.
RAW_TRACEPOINT_PROBE(sched_switch) {
    ONLY_ATTACHED();
    u8 state = ctx->args[0] ? HERD_SLEPT_NONE : slept_as((long)ctx->args[3]);
    // prev is still the current task here: its pid without a read of its task_struct.
    u32 prev = (u32)bpf_get_current_pid_tgid();
    const u8 *next = (const u8 *)ctx->args[2];
    on_switch(prev, state, task_pid(next), (const u8 *)ctx->args[1], next);
    return 0;
}
#endif
#else
TRACEPOINT_PROBE(sched, sched_waking) {
    ONLY_ATTACHED();
    on_waking(args->pid, 0, args->target_cpu);
    return TP_RETURN;
}

#if BEYOND_COUNTING
TRACEPOINT_PROBE(sched, sched_switch) {
    ONLY_ATTACHED();
    on_switch(args->prev_pid, slept_as(args->prev_state), args->next_pid, 0, 0);
    return TP_RETURN;
}
#endif
#endif

#if BEYOND_COUNTING
TRACEPOINT_PROBE(sched, sched_process_fork) {
    ONLY_ATTACHED();
    u32 parent = args->parent_pid;
    if (!find(parent) || frozen())
        return TP_RETURN;
    ONLY_FILTERED(TP_RETURN);
    u32 child = args->child_pid;
    u16 *known = is_traced.lookup(&child);
    if (!known)
        return TP_RETURN;
    u16 slot = *known;  // its exit not seen, the tid reused: the same slot
    if (!slot) {
        if (free_slots.pop(&slot)) {
            count(HERD_CNT_THREADS_UNTRACED);
            return TP_RETURN;
        }
        slot++;
    }
    struct traced_thread fresh = {};
    fresh.fork_ts = bpf_ktime_get_ns();
    fresh.tid = child;
    fresh.parent = parent;
    u32 i = slot - 1;
    traced.update(&i, &fresh);
    *known = slot;
    return TP_RETURN;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    ONLY_ATTACHED();
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct traced_thread *t = find(tid);
    ONLY_FILTERED(TP_RETURN);
    if (!t || frozen())
        return TP_RETURN;
    announce(t, tid, id >> 32);
    settle(t, 0);
    take_waking(t, tid, t->waking.ts);
    if (t->pending)
        close_wakeup(t, HERD_OUTCOME_OTHER);
    struct herd_event *e = new_event(HERD_KIND_THREAD_EXIT, bpf_ktime_get_ns());
    if (e) {
        e->tid = tid;
        e->tgid = id >> 32;
        events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    }
    t->tid = 0;
    u16 *slot = is_traced.lookup(&tid);
    if (slot && *slot) {
        u16 free = *slot - 1;
        *slot = 0;
        free_slots.push(&free, 0);
    }
    return TP_RETURN;
}
#endif

// Something made a socket ready on this CPU: the wakeups that follow, by the same
// task, are its.
static __always_inline void note_ready(u8 why, u64 sk, u64 conn_id, u16 port) {
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    if (!c)
        return;
    c->ready_ts = bpf_ktime_get_ns();
    c->ready_waker = bpf_get_current_pid_tgid();
    c->ready_cause = why;
    c->ready_sk = sk;
    c->ready_conn = conn_id;
    c->ready_port = port;
}

// A TCP socket changed state (any context). Classic tracepoints fill every field;
// the raw one reads the socket's protocol, ports and addresses itself, and only
// when needed.
struct sock_change {
    const u8 *raw;      // the socket, where its fields are still to be read (raw)
    u64 sk;
    int oldstate;
    int newstate;
    u16 protocol;
    u16 sport;
    u16 dport;
    u16 family;
    u8 daddr[4];
    u8 daddr6[16];
};

// Whether a change can matter, from the arguments alone: of the ~10 changes per
// connection on the machine, most are a client's (-> SYN_SENT, SYN_SENT ->
// ESTABLISHED) or a socket's own close (-> FIN_WAIT1, -> LAST_ACK), which wake
// nobody. Kept: a child established, a listen(), and what wakes an accepted
// socket's reader through sk_state_change: the peer's FIN (-> CLOSE_WAIT,
// -> CLOSING, -> TIME_WAIT), the ack of ours after shutdown (-> FIN_WAIT2), the end.
static __always_inline int may_matter(int oldstate, int newstate) {
    switch (newstate) {
    case ST_ESTABLISHED:
        return oldstate == ST_SYN_RECV;
    case ST_LISTEN:
    case ST_CLOSE_WAIT:
    case ST_CLOSING:
    case ST_FIN_WAIT2:
    case ST_TIME_WAIT:
    case ST_CLOSE:
        return 1;
    default:
        return 0;
    }
}

static __always_inline void on_state(struct sock_change *s) {
    if (!may_matter(s->oldstate, s->newstate) || frozen())
        return;
    u64 skaddr = s->sk;
    // A child being established is new, whatever socket its memory held before.
    int fresh = s->newstate == ST_LISTEN || s->newstate == ST_ESTABLISHED;
    struct conn_slot *known = fresh ? 0 : conn_find(skaddr);
    ONLY_FILTERED();
    if (known) {
        // Woken through sk_state_change, with no sk_data_ready: that connection's wakeup.
        note_ready(HERD_CAUSE_CONNECTION, sk_id((const void *)skaddr), known->conn_id, 0);
        if (s->newstate == ST_CLOSE)
            known->sk = 0;
        return;
    }
    if (s->newstate != ST_LISTEN && s->newstate != ST_ESTABLISHED)
        return;
#ifdef RAW_NET
    if (s->raw) {
        bpf_probe_read_kernel(&s->protocol, sizeof(s->protocol), s->raw + SK_PROTOCOL_OFF);
        struct sk_head h = {};
        read_sk_head(s->raw, &h);
        s->sport = h.num;
        s->dport = (h.dport_be >> 8) | ((h.dport_be & 0xff) << 8);
        s->family = h.family;
        __builtin_memcpy(s->daddr, h.daddr, 4);
    }
#endif
    if (s->protocol != PROTO_TCP)
        return;
    u16 port = s->sport;
    if (s->newstate == ST_LISTEN) {
        // listen() by a traced thread runs in its context: learn its port.
        u64 *entry = port_entry(port);
        if (entry && find((u32)bpf_get_current_pid_tgid()))
            *entry = 1;
        return;
    }
    if (!traced_port(port))
        return;
    int zero = 0;
    u64 *seq = conn_seq.lookup(&zero);
    if (!seq)
        return;
    u64 conn_id = __sync_fetch_and_add(seq, 1) + 1;
    conn_add(skaddr, conn_id);
    u64 now = bpf_ktime_get_ns();
    struct net_cause *c = cause.lookup(&zero);
#ifdef AGGREGATE
    struct listener_counts *n = listener_entry(port);
    if (n)
        n->connections++;
#ifndef HAVE_SK_DATA_READY
    if (c)  // the connection-state rule: the child's establishing is the readiness event
        readiness_open(&c->agg_port, &c->agg_woken, port);
#endif
#endif
    if (c) {
        c->conn_id = conn_id;
        c->conn_ts = now;
        c->chain_ts = now;
        c->conn_sk = skaddr;
        c->conn_waker = bpf_get_current_pid_tgid();
        c->conn_port = port;
        c->conn_used = 0;
    }
#ifdef RAW_NET
    if (s->raw && s->family == FAM_INET6)
        bpf_probe_read_kernel(&s->daddr6, sizeof(s->daddr6), s->raw + SK_V6_DADDR_OFF);
#endif
    struct herd_event *e = new_event(HERD_KIND_CONN, now);
    if (!e)
        return;
    e->conn_id = conn_id;
    e->sk = sk_id((const void *)skaddr);
    e->lport = port;
    e->rport = s->dport;
    if (s->family == FAM_INET6) {
        __builtin_memcpy(&e->raddr[0], s->daddr6, 16);
        e->flags |= HERD_FLAG_IPV6;
    } else {
        e->raddr[10] = 0xff;
        e->raddr[11] = 0xff;
        __builtin_memcpy(&e->raddr[12], s->daddr, 4);
    }
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

#if BEYOND_COUNTING && !defined(NO_CONNECTIONS)
#ifdef RAW_NET
// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
RAW_TRACEPOINT_PROBE(inet_sock_set_state) {
    ONLY_ATTACHED();
    const u8 *sk = (const u8 *)ctx->args[0];
    struct sock_change s = {};
    s.raw = sk;
    s.sk = (u64)sk;
    s.oldstate = (int)ctx->args[1];
    s.newstate = (int)ctx->args[2];
    on_state(&s);
    return 0;
}
#else
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    ONLY_ATTACHED();
    struct sock_change s = {};
    s.sk = (u64)args->skaddr;
    s.oldstate = args->oldstate;
    s.newstate = args->newstate;
    s.protocol = args->protocol;
    s.sport = args->sport;
    s.dport = args->dport;
    s.family = args->family;
    __builtin_memcpy(s.daddr, args->daddr, 4);
    __builtin_memcpy(s.daddr6, args->daddr_v6, 16);
    on_state(&s);
    return TP_RETURN;
}
#endif
#endif

#if defined(WITH_CONN_STATE_RULE) || defined(NO_CONNECTIONS)
// A packet is being received on this CPU: it ends the listener's run of wakeups.
// Without connections followed, it also ends the last readable socket's: what the
// packet wakes next is its own doing (a peer's FIN wakes through sk_state_change,
// which has no tracepoint), not that socket's.
static __always_inline void on_receive(void) {
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    ONLY_FILTERED();
    if (!c)
        return;
#ifdef NO_CONNECTIONS
    if (c->ready_ts)
        c->ready_ts = 0;
#else
    if (c->chain_ts)
        c->chain_ts = 0;
#endif
}

#if BEYOND_COUNTING
#ifdef RAW_NET
RAW_TRACEPOINT_PROBE(netif_receive_skb) {
    ONLY_ATTACHED();
    on_receive();
    return 0;
}
#else
TRACEPOINT_PROBE(net, netif_receive_skb) {
    ONLY_ATTACHED();
    on_receive();
    return TP_RETURN;
}
#endif
#endif
#endif

#ifdef HAVE_SK_DATA_READY
// Whether a readable socket is the listener of the child this task just established
// on this CPU (its parent's sk_data_ready follows in the same call chain,
// tcp_child_process). With the socket's state and port readable, that alone says
// so, however long the CPU was away between the two (a VM's vCPU preempted: 300 us
// was seen); classic tracepoints can only rule out the accepted sockets, so a time
// bound guards them.
static __always_inline int is_parent(const void *sk, const struct net_cause *c, u64 now) {
#ifdef RAW_NET
    struct sk_head h = {};
    read_sk_head((const u8 *)sk, &h);
    return h.state == ST_LISTEN && h.num == c->conn_port;
#else
    return now - c->conn_ts < CONN_WINDOW_NS && !conn_find((u64)sk);
#endif
}

// A socket became readable (the waker's context), just before the wakeups it causes.
// Runs for every readable socket on the machine: no map is looked up here
// (ready_cause_of does that for the few that wake a traced thread), and the listener
// rule below reads the socket only once a traced listener's child was established by
// this task, until that child's listener is found.
static __always_inline void on_data_ready(const void *sk) {
    int zero = 0;
    struct net_cause *c = cause.lookup(&zero);
    ONLY_FILTERED();
    if (!c)
        return;
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u64 skaddr = (u64)sk;
    c->ready_ts = now;
    c->ready_waker = id;
    c->ready_raw = skaddr;
#ifdef NO_CONNECTIONS
    c->ready_cause = HERD_CAUSE_NONE;  // decided by ready_cause_of, from the socket itself
    return;
#endif
    if (c->conn_ts && c->conn_waker == id && !c->conn_used && skaddr != c->conn_sk &&
        is_parent(sk, c, now)) {
        // After a child was established, by the same task on this CPU: its
        // listener (tcp_child_process wakes the parent). Use the connection once.
        c->conn_used = 1;
        c->ready_cause = HERD_CAUSE_LISTENER;
        c->ready_sk = sk_id(sk);
        c->ready_conn = c->conn_id;
        c->ready_port = c->conn_port;
#ifdef AGGREGATE
        readiness_open(&c->agg_port, &c->agg_woken, c->conn_port);
#endif
    } else {
        c->ready_cause = HERD_CAUSE_NONE;  // a connection's or another socket's
    }
}

#if BEYOND_COUNTING
#ifdef RAW_NET
RAW_TRACEPOINT_PROBE(sk_data_ready) {
    ONLY_ATTACHED();
    on_data_ready((const void *)ctx->args[0]);
    return 0;
}
#else
TRACEPOINT_PROBE(sock, sk_data_ready) {
    ONLY_ATTACHED();
    on_data_ready(args->skaddr);
    return TP_RETURN;
}
#endif
#endif
#endif
