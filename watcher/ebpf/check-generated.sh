#!/bin/sh
# Regenerates the BPF objects and their Go files with Debian 12's clang 14
# (apt-get install clang-14 llvm-14 libbpf-dev) and fails if they differ from
# the committed ones: the build uses the committed files, never clang.
set -eu
cd "$(dirname "$0")/../.."
go generate ./watcher/ebpf/
git diff --exit-code --stat -- watcher/ebpf/
