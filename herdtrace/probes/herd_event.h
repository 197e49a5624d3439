/* Generated from herdtrace/schema.py by `python -m herdtrace.schema`. Do not edit. */
#ifndef HERD_EVENT_H
#define HERD_EVENT_H

#define HERD_SCHEMA_VERSION 4
#define HERD_EVENT_SIZE 128
#define HERD_KIND_WAKEUP 1
#define HERD_KIND_ACCEPT 2
#define HERD_KIND_CONN 3
#define HERD_KIND_THREAD 4
#define HERD_KIND_THREAD_EXIT 5
#define HERD_OUTCOME_NONE 0
#define HERD_OUTCOME_ACCEPTED 1
#define HERD_OUTCOME_EAGAIN 2
#define HERD_OUTCOME_ABSORBED 3
#define HERD_OUTCOME_OTHER 4
#define HERD_OUTCOME_UNRESOLVED 5
#define HERD_CALL_NONE 0
#define HERD_CALL_ACCEPT 1
#define HERD_CALL_ACCEPT4 2
#define HERD_CALL_EPOLL_WAIT 3
#define HERD_CALL_EPOLL_PWAIT 4
#define HERD_CALL_EPOLL_PWAIT2 5
#define HERD_CALL_POLL 6
#define HERD_CALL_PPOLL 7
#define HERD_CALL_SELECT 8
#define HERD_CALL_PSELECT6 9
#define HERD_CALL_KEVENT 10
#define HERD_FLAG_NET_CAUSE 1
#define HERD_FLAG_WAKER_IDLE 2
#define HERD_FLAG_PEER 4
#define HERD_FLAG_IPV6 8
#define HERD_FLAG_CONN_STATE_LISTENER 16
#define HERD_FLAG_EPOLL_REWAKE 32
#define HERD_FLAG_WAKING_UNSEEN 64
#define HERD_CAUSE_NONE 0
#define HERD_CAUSE_LISTENER 1
#define HERD_CAUSE_CONNECTION 2
#define HERD_CAUSE_SOCKET 3
#define HERD_CAUSE_TIMER 4
#define HERD_CAUSE_OTHER 5
#define HERD_CAUSE_UNKNOWN 6
#define HERD_BASIS_NONE 0
#define HERD_BASIS_SK_DATA_READY 1
#define HERD_BASIS_CONN_STATE 2
#define HERD_BASIS_ANALYSIS 3
#define HERD_SLEPT_NONE 0
#define HERD_SLEPT_INTR 1
#define HERD_SLEPT_UNINTR 2
#define HERD_SLEPT_UNKNOWN 3
#define HERD_EAGAIN 11
#define HERD_CAUSE_WINDOW_NS 200000
#define HERD_CONN_WINDOW_NS 200000
#define HERD_CONN_WAYS 4
#define HERD_CNT_LOST_EVENTS 0 /* ring buffer reservation failed: a record is lost */
#define HERD_CNT_THREADS_UNTRACED 1 /* a new thread could not be traced: the thread table is full */
#define HERD_CNT_WAKINGS_MERGED 2 /* a waking of a thread whose wakeup had not returned yet: the same wakeup */
#define HERD_CNT_WAKINGS_UNINTERRUPTIBLE 3 /* a waking that ended an uninterruptible sleep (a lock): not a wakeup */
#define HERD_CNT_WAKINGS_UNSEEN 4 /* a thread back from a wait's sleep with no waking seen: recorded from its switch-in */
#define HERD_CNT_CONNS_EVICTED 5 /* an accepted socket forgotten for a newer one (its set was full): its wakeups say socket */
#define HERD_CNT_UNCOUNTED 6 /* aggregation only: a listener or accepting socket not counted, its table is full */
#define HERD_CNT_NUM 7

struct herd_event {
    u64 ts; /* event time, ns of CLOCK_MONOTONIC (wakeup: sched_waking; flag waking_unseen: the switch-in or return that found it) */
    u64 enter_ts; /* wakeup/accept: entry of the wait syscall */
    u64 oncpu_ts; /* wakeup: first switch onto a CPU after waking (null: not seen) */
    u64 ret_ts; /* wakeup: return of the woken wait syscall (null: absorbed) */
    u64 sk; /* wakeup: keyed hash of the socket that became ready; conn: of the child */
    u64 conn_id; /* conn: its id; wakeup: the connection that caused it (null: unknown; record --no-connections: one id per listener readiness, with no conn row) */
    u32 tid; /* thread the record is about */
    u32 tgid; /* its process */
    u32 other_tid; /* wakeup: waker thread; thread: parent thread */
    u32 other_tgid; /* wakeup: waker process */
    s32 fd; /* wakeup: fd argument of the wait (nfds for poll/select); accept: fd */
    s32 ret; /* wakeup: return of the woken wait; accept: new fd or -errno */
    u32 cpu_ns; /* wakeup: on-CPU time it led to, from its switch-in to the thread's next switch-out into a wait (absorbed: back to sleep in the same wait), as metadata cpu_time says it was taken; saturates at 2^32-1 ns */
    u16 lport; /* conn: local (listening) port; wakeup: the listener's, for listener wakeups */
    u16 rport; /* conn/accept: peer port */
    u16 cpu; /* CPU the record was made on (wakeup: the waker's) */
    u16 target_cpu; /* wakeup: CPU the woken thread was queued on */
    u16 accepts; /* wakeup: accepts that returned a connection before the next wait */
    u16 eagains; /* wakeup: accepts that returned EAGAIN before the next wait */
    u8 kind; /* what the row is: wakeup, accept, conn, thread, thread_exit */
    u8 outcome; /* wakeup: accepted, eagain, absorbed, other or unresolved */
    u8 wait_call; /* wakeup/accept: the syscall the thread waited in */
    u8 flags; /* bits: 1 net_cause, 2 waker_idle, 4 peer, 8 ipv6, 16 conn_state_listener, 32 epoll_rewake, 64 waking_unseen */
    u8 cause; /* wakeup: listener, connection, socket, timer, other or unknown */
    u8 cause_basis; /* wakeup: how the cause was decided */
    u8 raddr[16]; /* conn/accept: peer address, 16 bytes in network order, IPv6 or IPv4-mapped (::ffff:a.b.c.d); with rport, the peer */
    char comm[16]; /* thread: command name */
    u8 pad[2]; /* padding to a multiple of 8 bytes */
};

#endif
