/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types portwatch.bpf.c reads, declared by hand instead of a
 * generated vmlinux.h (which runs to 100,000 lines and changes with every
 * kernel). Each struct names only the members the programs touch: with
 * preserve_access_index, clang records every member access as a CO-RE
 * relocation by name, and the loader resolves it against the running kernel's
 * BTF (/sys/kernel/btf/vmlinux), so neither the member order nor the padding
 * here has to match any kernel. Only the member types must have the kernel's
 * sizes.
 */
#ifndef PORTWATCH_TYPES_H
#define PORTWATCH_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;

/* Used by bpf_helper_defs.h in the signatures of helpers not called here. */
typedef __u16 __sum16;

enum {
	AF_INET = 2,
	AF_INET6 = 10,
};

enum {
	IPPROTO_TCP = 6,
	IPPROTO_UDP = 17,
};

/* include/net/tcp_states.h */
enum {
	TCP_CLOSE = 7,
	TCP_LISTEN = 10,
};

/* enum bpf_map_type and the map flags are UAPI: fixed numbers. */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

/*
 * struct bpf_sock is the UAPI context of cgroup/post_bind4, post_bind6 and
 * sock_release.
 * The verifier rewrites each access to it into an access to struct sock, so
 * it is declared with its UAPI layout and without preserve_access_index.
 */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;    /* network byte order */
	__u32 src_ip6[4]; /* network byte order */
	__u32 src_port;   /* host byte order */
};

/* UAPI: what bpf_get_ns_current_pid_tgid fills. */
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

struct sock_common {
	__be32 skc_rcv_saddr;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
};

struct inet_sock {
	__be16 inet_sport;
};

struct nsproxy {
	struct net *net_ns;
};

struct task_struct {
	struct nsproxy *nsproxy;
};

/* Only passed through: sched_process_exec's third argument. */
struct linux_binprm;

#pragma clang attribute pop

#endif /* PORTWATCH_TYPES_H */
