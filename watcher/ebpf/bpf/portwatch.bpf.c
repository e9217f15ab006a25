/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel side of portwatchd's event triggers: report every socket that starts
 * or stops listening, at the socket layer, so that listen() and bind() issued
 * through io_uring (IORING_OP_LISTEN, IORING_OP_BIND) are seen like the system
 * calls. The daemon treats each event as a trigger to look at the namespace;
 * the sock_diag snapshot stays the truth.
 *
 *   tp_btf/inet_sock_set_state    TCP socket entering LISTEN (listen), and
 *                                 leaving it (close)
 *   fexit/inet_csk_listen_start   TCP listen(): final port, return code;
 *                                 optional, see exit_reports_listen
 *   cgroup/post_bind4, post_bind6 UDP bind() that succeeded; always allows
 *   cgroup/sock_release           release of a UDP socket post_bind reported
 *   tp_btf/sched_process_exec     execve() of a process the daemon lists in
 *                                 holders: one that holds a listening socket
 *
 * The program only observes: post_bind and sock_release return 1 (allow) on
 * every path.
 */
#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum event_kind {
	KIND_LISTEN = 1,
	KIND_CLOSE = 2,
	KIND_BIND = 3,
	KIND_EXEC = 4,
};

/*
 * One ring buffer record. Members are ordered by size so that the struct has
 * no implicit padding: the Go parser reads it by offset.
 */
struct event {
	__u64 ts_ns;     /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u64 netns_ino; /* inode of the socket's network namespace */
	__u64 cgroup_id; /* cgroup v2 id of the current task */
	__u8 addr[16];   /* local address, network byte order; IPv4 in the first 4 bytes */
	char comm[16];
	__u32 tgid;
	__u32 uid;
	__s32 ret; /* listen's return code (0 or -errno); 0 for the others */
	__u16 family;
	__u16 port; /* host byte order */
	__u8 protocol;
	__u8 kind;
	__u8 pad[6];
};

/*
 * Puts struct event in the object's BTF, from which bpf2go generates the Go
 * type (-type event) that a test checks the parser's offsets against.
 */
const struct event *unused_event __attribute__((unused));

/*
 * Set by the loader once listen_exit is attached. Until then (or on a kernel
 * where fexit cannot attach: no BPF trampoline, or a security module that
 * refuses it) the tracepoint reports listens itself, before get_port(): with
 * port 0 for a socket that listens without bind(), and with ret 0 even when
 * the listen fails (then a close follows at once).
 */
volatile __u32 exit_reports_listen;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Records that did not fit in the ring buffer, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/*
 * The UDP sockets post_bind reported, by socket cookie, so that their release
 * is reported and no other's (every client socket is released too). A socket
 * that does not fit is not reported when released: the snapshot sees it gone.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} udp_bound SEC(".maps");

/*
 * The daemon's PID namespace (st_dev and st_ino of /proc/self/ns/pid), set by
 * the loader: holder_exec reports and matches pids as the daemon sees them,
 * also when it runs in a PID namespace of its own. Until set, and for a
 * process outside that namespace, nothing is reported.
 */
volatile __u64 pidns_dev;
volatile __u64 pidns_ino;

/*
 * The processes (tgids, as the daemon sees them: see pidns_dev) that hold a
 * listening socket, kept by the daemon. Their execs are reported:
 * an exec keeps the descriptors that are not close-on-exec, so the same pid
 * may hold the same socket as another program. One that does not fit is not
 * reported; the daemon's rolling re-check of holders finds it later. Not
 * preallocated: a host has tens or hundreds of holders, not 65536.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} holders SEC(".maps");

static __always_inline struct event *reserve(__u8 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&drops, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->tgid = id >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->kind = kind;
	e->ret = 0;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	return e;
}

/* Fills the namespace, family, address and port from a struct sock. */
static __always_inline void fill_sock(struct event *e, const struct sock *sk)
{
	e->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	/*
	 * A listener's close unhashes it and releases its port (skc_num = 0)
	 * before the tracepoint fires; the source port listen set stays.
	 */
	if (!e->port)
		e->port = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	e->protocol = BPF_CORE_READ(sk, sk_protocol);
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (e->family == AF_INET6)
		BPF_CORE_READ_INTO(&e->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__be32 *)e->addr, sk, __sk_common.skc_rcv_saddr);
}

/* Reports a TCP socket; other protocols (MPTCP's own socket) are left out. */
static __always_inline void report_tcp(__u8 kind, const struct sock *sk, int ret)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	struct event *e = reserve(kind);
	if (!e)
		return;
	fill_sock(e, sk);
	e->ret = ret;
	bpf_ringbuf_submit(e, 0);
}

/*
 * A TCP socket entering LISTEN (listen(), before get_port() picks the port and
 * the socket is hashed), or leaving it: close(), shutdown(), or a listen()
 * whose get_port() failed. For a close, the task is the one that closed the
 * socket, which may not be the one that opened it.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state, const struct sock *sk, int oldstate, int newstate)
{
	__u8 kind;
	if (newstate == TCP_LISTEN && oldstate != TCP_LISTEN) {
		if (exit_reports_listen)
			return 0;
		kind = KIND_LISTEN;
	} else if (oldstate == TCP_LISTEN && newstate != TCP_LISTEN) {
		kind = KIND_CLOSE;
	} else {
		return 0;
	}
	report_tcp(kind, sk, 0);
	return 0;
}

/*
 * Every TCP listen() ends here (inet_listen, io_uring's IORING_OP_LISTEN,
 * MPTCP's subflow). The state tracepoint fires before get_port() picks the
 * port, so the listen event comes from the exit, with the port the socket got
 * and the return code: a listen that failed (EADDRINUSE at listen time) has
 * ret < 0, and is also seen leaving LISTEN through the tracepoint, just
 * before.
 */
SEC("fexit/inet_csk_listen_start")
int BPF_PROG(listen_exit, struct sock *sk, int ret)
{
	report_tcp(KIND_LISTEN, sk, ret);
	return 0;
}

/*
 * post_bind runs after a bind() that succeeded, with the port chosen (also
 * for port 0). A TCP bind is not a listener (its listen event follows), so
 * only UDP is reported. The context is a struct sock underneath: reading its
 * namespace through it gives the socket's namespace even when the binding
 * task runs in another one. The verifier allows each program only its own
 * family's address member, hence the constant v6.
 */
static __always_inline int post_bind(struct bpf_sock *ctx, const int v6)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	struct event *e = reserve(KIND_BIND);
	if (!e)
		return 1;
	const struct sock *sk = (const struct sock *)ctx;
	e->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	e->family = ctx->family;
	e->port = ctx->src_port;
	e->protocol = ctx->protocol;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	__u32 *a = (__u32 *)e->addr;
	if (v6) {
		a[0] = ctx->src_ip6[0];
		a[1] = ctx->src_ip6[1];
		a[2] = ctx->src_ip6[2];
		a[3] = ctx->src_ip6[3];
	} else {
		a[0] = ctx->src_ip4;
	}
	bpf_ringbuf_submit(e, 0);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u8 one = 1;
	bpf_map_update_elem(&udp_bound, &cookie, &one, BPF_ANY);
	return 1;
}

SEC("cgroup/post_bind4")
int post_bind4(struct bpf_sock *ctx)
{
	return post_bind(ctx, 0);
}

SEC("cgroup/post_bind6")
int post_bind6(struct bpf_sock *ctx)
{
	return post_bind(ctx, 1);
}

/*
 * inet_release, before the protocol's close: the socket still has its port.
 * The verifier gives this program no address members of the context, so they
 * are read from the struct sock underneath, as for TCP.
 */
SEC("cgroup/sock_release")
int sock_release(struct bpf_sock *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (!bpf_map_lookup_elem(&udp_bound, &cookie))
		return 1;
	bpf_map_delete_elem(&udp_bound, &cookie);
	struct event *e = reserve(KIND_CLOSE);
	if (!e)
		return 1;
	fill_sock(e, (const struct sock *)ctx);
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/*
 * A successful execve() (or execveat, or fexecve), once the new program is in
 * place: the current task is the process that exec'd, with its tgid (a thread
 * that exec'd has taken the leader's pid) and its new comm. Its pid is the
 * daemon's view of it, the event's too. Only holders are
 * reported: every other exec costs one hash lookup here.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(holder_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct bpf_pidns_info ns;
	if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
		return 0;
	__u32 tgid = ns.tgid;
	if (!bpf_map_lookup_elem(&holders, &tgid))
		return 0;
	struct event *e = reserve(KIND_EXEC);
	if (!e)
		return 0;
	e->tgid = tgid;
	e->netns_ino = BPF_CORE_READ(p, nsproxy, net_ns, ns.inum);
	e->family = 0;
	e->port = 0;
	e->protocol = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
