# portwatchd: build, test, lint, package and system-test targets.
# Everyday: "make test" (no root needed), "make lint", "make fuzz". The
# README's test command is scripts/test-all.sh, which installs what the
# tests need and runs "make lint", "make test-root", "make fuzz" and the
# system test, as CI does.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0~dev)
# A Debian version must start with a digit: v1.2.3-4-gabc -> 1.2.3+4.gabc;
# an untagged tree (a bare commit hash) -> 0.0.0~git<hash>.
DEB_VERSION ?= $(shell echo '$(VERSION)' | sed -E \
	-e 's/^v//' \
	-e '/^[0-9]+\./!{/^0\.0\.0~dev$$/!s/^/0.0.0~git/}' \
	-e 's/-/+/' -e 's/-/./g')
ARCH ?= $(shell go env GOARCH)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
# Expand each once, not at every use.
VERSION := $(VERSION)
DEB_VERSION := $(DEB_VERSION)
SOURCE_DATE_EPOCH := $(SOURCE_DATE_EPOCH)
export SOURCE_DATE_EPOCH

MAINTAINER ?= portwatchd maintainers <portwatchd@users.noreply.github.com>

GO ?= go
# A static binary (no libc dependency, one file to copy); symbols are
# stripped as Debian wants, but Go keeps what panics need for stack traces.
CGO_ENABLED ?= 0
export CGO_ENABLED
GOFLAGS_BUILD ?= -trimpath -buildmode=pie
GO_MD2MAN = $(GO) run github.com/cpuguy83/go-md2man/v2@v2.0.7
NFPM = $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

# Pinned: a new staticcheck release may report new things, which should be a
# change of its own, not a surprise in an unrelated one.
STATICCHECK_VERSION = v0.8.2
STATICCHECK = .bin/staticcheck-$(STATICCHECK_VERSION)
# An execution count, not a duration: with a duration, Go 1.26's fuzzing
# coordinator can fail a clean run with "context deadline exceeded" as the
# time runs out (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 30000x
# Extra flags for test-root, such as -v.
GOTESTFLAGS ?=

PREFIX ?= /usr
SYSCONFDIR ?= /etc
DESTDIR ?=

BUILD = build
DEB = $(BUILD)/portwatchd_$(DEB_VERSION)-1_$(ARCH).deb
MANPAGES = $(BUILD)/man/portwatchd.8.gz $(BUILD)/man/portwatch.yaml.5.gz

.PHONY: all build generate check-generated test test-root lint tools fuzz man deb install systest lint-deb bench clean print-version FORCE

all: build

build: $(BUILD)/portwatchd

# FORCE: go build is itself incremental, and the version may change.
$(BUILD)/portwatchd: FORCE
	@mkdir -p $(BUILD)
	$(GO) build $(GOFLAGS_BUILD) -ldflags "-s -w -X main.version=$(VERSION)" -o $@ ./cmd/portwatchd

# Tests build as "go test" does by default, with cgo: the race detector
# needs it, and the release build above turns it off.
GOTEST = CGO_ENABLED=1 $(GO) test

# The unit tests, race detector on, without root: tests that need root, or
# that are long, skip and say why.
test:
	$(GOTEST) -short -race ./...

# Every test, as CI runs them, as root. -p 1: one package at a time. The
# daemon's end-to-end tests watch the whole host, and the watcher's tests
# create and destroy network namespaces and cgroups on it; run side by
# side, each would be testing the other.
test-root:
	$(GOTEST) $(GOTESTFLAGS) -race -count=1 -p 1 -timeout 30m ./...

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt wants to change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

tools: $(STATICCHECK)

$(STATICCHECK):
	@mkdir -p .bin
	GOBIN=$(CURDIR)/.bin/tmp $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv .bin/tmp/staticcheck $@
	rmdir .bin/tmp

# The eBPF programs are compiled by bpf2go with Debian 12's clang 14
# (apt-get install clang-14 llvm-14 libbpf-dev); the objects and their Go
# files are committed, so that build, go run and the package need no clang.
generate:
	$(GO) generate ./watcher/ebpf/

# Regenerates and fails if the committed objects differ.
check-generated:
	sh watcher/ebpf/check-generated.sh

# A short run of every fuzz target: FUZZTIME executions each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for fz in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "--- $$pkg $$fz"; \
			$(GOTEST) -run '^$$' -fuzz "^$${fz}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x -timeout 10m "$$pkg"; \
		done; \
	done

man: $(MANPAGES)

$(BUILD)/man/%.gz: docs/man/%.md
	@mkdir -p $(BUILD)/man
	$(GO_MD2MAN) -in $< -out $(BUILD)/man/$*
	gzip -9nf $(BUILD)/man/$*

$(BUILD)/changelog.Debian.gz: FORCE
	@mkdir -p $(BUILD)
	printf '%s\n' \
		'portwatchd ($(DEB_VERSION)-1) unstable; urgency=medium' '' \
		'  * Built from git $(VERSION).' '' \
		" -- $(MAINTAINER)  $$(date -u -R -d @$(SOURCE_DATE_EPOCH))" \
		| gzip -9n > $@

deb: $(DEB)

$(DEB): build man $(BUILD)/changelog.Debian.gz packaging/deb/nfpm.yaml packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm packaging/systemd/portwatchd.service packaging/systemd/portwatchd.catalog configs/portwatch.yaml packaging/prometheus/portwatch-rules.yml packaging/grafana/portwatch-dashboard.json
	rm -f $(BUILD)/portwatchd_*.deb
	ARCH=$(ARCH) DEB_VERSION=$(DEB_VERSION) MAINTAINER='$(MAINTAINER)' $(NFPM) package --config packaging/deb/nfpm.yaml --packager deb --target $@
	@echo "built $@"

lint-deb: $(DEB)
	lintian --fail-on error --display-info --suppress-tags-from-file packaging/deb/lintian-suppress $(DEB)

# install puts the same files as the .deb in place (without maintainer
# scripts): afterwards run "systemctl daemon-reload; systemctl enable --now
# portwatchd". An existing /etc/portwatch.yaml is kept, as dpkg keeps a
# changed conffile.
install: build man
	install -D -m 0755 $(BUILD)/portwatchd $(DESTDIR)$(PREFIX)/sbin/portwatchd
	install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's#/usr/sbin/portwatchd#$(PREFIX)/sbin/portwatchd#g' packaging/systemd/portwatchd.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/portwatchd.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/portwatchd.service
	install -D -m 0644 packaging/systemd/portwatchd.catalog $(DESTDIR)$(PREFIX)/lib/systemd/catalog/portwatchd.catalog
	install -D -m 0644 $(BUILD)/man/portwatchd.8.gz $(DESTDIR)$(PREFIX)/share/man/man8/portwatchd.8.gz
	install -D -m 0644 $(BUILD)/man/portwatch.yaml.5.gz $(DESTDIR)$(PREFIX)/share/man/man5/portwatch.yaml.5.gz
	install -D -m 0644 packaging/deb/copyright $(DESTDIR)$(PREFIX)/share/doc/portwatchd/copyright
	install -D -m 0644 packaging/prometheus/portwatch-rules.yml $(DESTDIR)$(PREFIX)/share/portwatchd/portwatch-rules.yml
	install -D -m 0644 packaging/grafana/portwatch-dashboard.json $(DESTDIR)$(PREFIX)/share/portwatchd/portwatch-dashboard.json
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/doc/portwatchd/examples
	install -m 0644 configs/examples/* $(DESTDIR)$(PREFIX)/share/doc/portwatchd/examples/
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/portwatch.d
	test -e $(DESTDIR)$(SYSCONFDIR)/portwatch.yaml || \
		install -D -m 0644 configs/portwatch.yaml $(DESTDIR)$(SYSCONFDIR)/portwatch.yaml
	-test -n "$(DESTDIR)" || ! command -v journalctl >/dev/null || journalctl --update-catalog

# The system test boots a real systemd in a throwaway sandbox (root only)
# and installs the .deb in it.
systest: $(DEB)
	PORTWATCH_SYSTEST_DEB=$(CURDIR)/$(DEB) $(GO) test -tags systest -count=1 -v -timeout 8m ./systest/

print-version:
	@echo $(VERSION) $(DEB_VERSION)

bench:
	bash bench/run.sh

clean:
	rm -rf $(BUILD)
