package ebpf

// The kernel programs are compiled by bpf2go into portwatch_bpfel.o and
// portwatch_bpfeb.o, embedded by the generated portwatch_bpfel.go and
// portwatch_bpfeb.go. All four are committed, so that building the daemon
// needs no clang. Regenerate them (Debian 12: apt-get install clang-14
// llvm-14 libbpf-dev) from the repository root with
//
//	go generate ./watcher/ebpf/
//
// clang is pinned to 14, Debian 12's, so that the objects are byte for byte
// the same on every machine that regenerates them.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel,bpfeb -type event portwatch bpf/portwatch.bpf.c
