# gilliam-sync. `make help` lists what you can run; `make demo` and `make test` are the two
# commands a newcomer needs. Everything built here lands in .cache/ (git-ignored) or in the
# local Docker engine, and a second run finds it and rebuilds nothing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
CACHE := $(CURDIR)/.cache
TOOLS_BIN := $(CACHE)/bin

CONSUL_VERSION := 1.20.2
GITEA_VERSION := 1.26.0
LIFECYCLE_VERSION := 0.21.14
LIFECYCLE_TGZ := $(CACHE)/lifecycle/lifecycle-v$(LIFECYCLE_VERSION)+linux.x86-64.tgz
BUSYBOX := $(CACHE)/busybox/bin/busybox

# The offline builder and its images (see build/builder/README.md). BUILDER_REGISTRY is the
# registry the builder names its run image in; builds that publish elsewhere add a mirror.
BUILDER ?= gilliam/builder:offline
BUILDER_REGISTRY ?= 127.0.0.1:5000
BUILD_IMAGE ?= gilliam/stack-build:busybox
RUN_IMAGE ?= $(BUILDER_REGISTRY)/gilliam/stack-run:busybox

# Tests find the tools here. Every package runs with -race; the gilliam-sync daemons the e2e
# tests start do with GILLIAM_RACE_DAEMONS=1 (twice the suite's CPU; testenv.Binary). -count=1: an
# integration test's result depends on more than its inputs, so it is never taken from Go's
# test cache.
export GILLIAM_TOOLS := $(CACHE)
export GILLIAM_BUILDER := $(BUILDER)
export GILLIAM_RUN_IMAGE := $(RUN_IMAGE)
export PACK_HOME := $(CACHE)/pack
export GILLIAM_REPORTS := $(CACHE)/reports
TEST_TIMEOUT ?= 25m
CHAOS_TIMEOUT ?= 15m
# The slowest packages first (they mostly wait: on containers, checks, leases), so they start
# at once; TEST_P packages at a time (Go's default is one per core).
# e2e, the longest, runs in a go test of its own started beside them (TEST_P counts it).
TEST_PKGS = ./cmd/... ./hostd/... ./build/... ./sync/... \
	$$($(GO) list ./... | grep -v -E '/(e2e|cmd|hostd|build|sync)($$|/)')
TEST_P ?= 4
# Tests in t.Parallel at a time within a package (Go's default is one per core: 2 here). The
# e2e tests mostly wait (on checks, roll-outs, leases); their builds are cheap since the
# offline builder ships Go's standard library compiled (build/builder/README.md). 6 was
# faster then, but its load made health checks of 1-2s flap (router and crash-loop tests
# failed); since the e2e daemons are built without -race and the test image is compressed
# once per package, the suite uses half the CPU, and 6 is faster with no flap
# (docs/testing.md). In e2e, GILLIAM_E2E_PARALLEL holds it instead of Go's -parallel, so that
# a free place goes to the longest test waiting (e2e/order_test.go): Go's own order had the
# three longest start last.
TEST_PARALLEL ?= 6
# Tests whose result depends on being scheduled in time (no request failed while instances
# swap, the gaps of a crash-loop backoff, a restart 2s after a check turns critical, a build
# stopped at its 4s timeout) run first, one package at a time, with nothing else running: in
# the main phase on 2 cores, CI measured a median of 4.3s per request in the router's swap
# test and 20-30s for the engine to restart a crashed container (docs/testing.md). The main
# phase skips them.
QUIET_TESTS := ^(TestZeroFailedRequestsAcrossSwaps|TestCrashLoopBacksOffToTheCap|TestUnhealthyInstanceIsRestarted|TestTimeoutAndCancel)$$
QUIET_PKGS := ./router ./hostd ./build

##@ Use

.PHONY: demo
demo: tools build ## Start everything on this machine (Consul, sync, host daemon) with the hello formation; Ctrl-C stops it
	@scripts/demo.sh

.PHONY: test
test: tools ## Run every test under -race, integration tests included (real Consul, Docker, registry, git); fail on anything left behind
	@rm -rf $(GILLIAM_REPORTS)
	@start=$$(date +%s); status=0; snap=$$(mktemp); \
	$(GO) build -o $(TOOLS_BIN)/leftovers ./internal/tools/leftovers; \
	$(TOOLS_BIN)/leftovers -snapshot $$snap; \
	echo "make test: the timing-bound tests first, alone ($(QUIET_PKGS))"; \
	$(GO) test -count=1 -race -p 3 -timeout $(TEST_TIMEOUT) -run '$(QUIET_TESTS)' $(QUIET_PKGS) || status=$$?; \
	echo "make test: every other test (e2e's printed after the rest)"; \
	e2e_log=$$(mktemp); \
	GILLIAM_E2E_PARALLEL=$(TEST_PARALLEL) $(GO) test -count=1 -race -parallel 64 -timeout $(TEST_TIMEOUT) ./e2e >$$e2e_log 2>&1 & e2e=$$!; \
	$(GO) test -count=1 -race -p $$(( $(TEST_P) > 1 ? $(TEST_P) - 1 : 1 )) -parallel $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) -skip '$(QUIET_TESTS)' $(TEST_PKGS) || status=$$?; \
	wait $$e2e || status=$$?; cat $$e2e_log; rm -f $$e2e_log; \
	if [ -d $(GILLIAM_REPORTS) ]; then echo; echo "Measured by the tests:"; cat $(GILLIAM_REPORTS)/*.txt; fi; \
	echo; $(TOOLS_BIN)/leftovers -before $$snap || status=1; rm -f $$snap; \
	took=$$(( $$(date +%s) - start )); echo "make test: $$((took / 60))m$$((took % 60))s wall time"; \
	exit $$status

.PHONY: build
build: ## Build bin/gilliam-sync
	$(GO) build -o bin/gilliam-sync ./cmd/gilliam-sync

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*##/ {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Develop

.PHONY: tools
tools: $(TOOLS_BIN)/consul $(TOOLS_BIN)/gitea $(LIFECYCLE_TGZ) $(BUSYBOX) $(CACHE)/openssh/root/usr/sbin/sshd ## Build what tests and the demo need into .cache/ and Docker: Consul, Gitea, lifecycle, sshd, stack and builder images
	@# fuse-overlayfs: the storage driver of the multi-host tests' engines (internal/cluster).
	@command -v fuse-overlayfs >/dev/null || { echo "tools: installing fuse-overlayfs from Debian"; \
		apt-get install -y -qq fuse-overlayfs >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq fuse-overlayfs; }; }
	@$(GO) build -o $(TOOLS_BIN)/mkbuilder ./internal/tools/mkbuilder
	@$(TOOLS_BIN)/mkbuilder -src build/builder -cache $(CACHE)/builder \
		-lifecycle $(LIFECYCLE_TGZ) -busybox $(BUSYBOX) \
		-name $(BUILDER) -build-image $(BUILD_IMAGE) -run-image $(RUN_IMAGE)
	@# Gitea serves its templates and locales from its module's folder (STATIC_ROOT_PATH in the
	@# app.ini internal/testenv writes): the link is made again each run, so it follows the
	@# module cache.
	@dir=$$(cd tools/gitea && $(GO) list -m -f '{{.Dir}}' code.gitea.io/gitea); \
		if [ -z "$$dir" ]; then (cd tools/gitea && $(GO) mod download code.gitea.io/gitea); \
			dir=$$(cd tools/gitea && $(GO) list -m -f '{{.Dir}}' code.gitea.io/gitea); fi; \
		mkdir -p $(CACHE)/gitea && ln -sfn "$$dir" $(CACHE)/gitea/static
	@echo "tools: consul $(CONSUL_VERSION) ($(TOOLS_BIN)/consul), gitea $(GITEA_VERSION), lifecycle $(LIFECYCLE_VERSION), busybox, sshd, builder $(BUILDER): all present"

.PHONY: check
check: ## gofmt, go vet, import rules (DESIGN.md) and a go mod tidy diff
	@# The tools folder is never in git (a tracked .cache link, merged, once replaced it).
	@if git ls-files --error-unmatch .cache >/dev/null 2>&1; then echo "check: .cache is tracked: git rm --cached .cache"; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^tools/')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run TestImportRules ./internal/importrules
	@cp go.mod $(CACHE)/go.mod.check 2>/dev/null || { mkdir -p $(CACHE); cp go.mod $(CACHE)/go.mod.check; }
	@cp go.sum $(CACHE)/go.sum.check
	@$(GO) mod tidy
	@if ! diff -u $(CACHE)/go.mod.check go.mod || ! diff -u $(CACHE)/go.sum.check go.sum; then \
		cp $(CACHE)/go.mod.check go.mod; cp $(CACHE)/go.sum.check go.sum; \
		echo "go mod tidy changes go.mod or go.sum: run it and commit the result"; exit 1; fi
	@echo "check: ok"

.PHONY: chaos
chaos: tools ## Run the chaos tests on a real multi-host cluster (root: a network namespace and an engine per host)
	@rm -rf $(GILLIAM_REPORTS)-chaos
	@# The figures are printed even when a test fails: they are what the failure is about.
	@status=0; set -x; GILLIAM_CHAOS=1 GILLIAM_REPORTS=$(GILLIAM_REPORTS)-chaos \
		$(GO) test -count=1 -timeout $(CHAOS_TIMEOUT) -run 'TestChaos' ./e2e/chaos/ || status=$$?; set +x; \
		if [ -d $(GILLIAM_REPORTS)-chaos ]; then echo; echo "Measured by the chaos tests:"; cat $(GILLIAM_REPORTS)-chaos/*.txt; fi; \
		exit $$status

.PHONY: clean-cluster
clean-cluster: ## Remove what a killed multi-host test run left: processes, namespaces, veths, mounts, cgroups of clusters gcl-*
	@scripts/clean-cluster.sh

.PHONY: bench
bench: tools ## Run the benchmarks behind the issues' performance targets and print their figures
	$(GO) test -run '^$$' -bench . -benchmem ./placement/
	$(GO) test -run '^$$' -bench . -benchmem ./gitwatch/
	$(GO) test -run '^$$' -bench Converge50 -benchtime 3x ./hostd/
	$(GO) test -run '^$$' -bench Build -benchtime 1x -v ./build/ | grep -v '^\s*{'
	$(GO) test -run '^$$' -bench 'RouterVsDirect|RouteConvergence' -benchtime 1x ./router/

.PHONY: fuzz
fuzz: ## Fuzz the gilliam.yml parser for 5 minutes (FUZZTIME=10m for longer)
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-5m} ./schema/

.PHONY: clean
clean: ## Remove bin/ (tool builds in .cache/ and images stay; rm -rf .cache to rebuild them)
	rm -rf bin

##@ Tools (make tools runs these)

# Consul is not packaged for Debian and `go install` refuses it (replace directives): a
# throwaway module in tools/consul requires it; about 5 minutes on 2 cores, 180 MB.
$(TOOLS_BIN)/consul: tools/consul/go.mod tools/consul/go.sum
	@echo "tools: building consul $(CONSUL_VERSION) from the Go module proxy (about 5 minutes)"
	cd tools/consul && CGO_ENABLED=0 GONOSUMDB=github.com/hashicorp/consul \
		$(GO) build -trimpath -o $@ github.com/hashicorp/consul

# Gitea, the forge the forge tests run against (internal/testenv/gitea.go), built the same way:
# a throwaway module in tools/gitea requires it with the replace lines of Gitea's own go.mod.
# SQLite needs cgo. About 5 minutes on 2 cores, 150 MB.
$(TOOLS_BIN)/gitea: tools/gitea/go.mod tools/gitea/go.sum
	@echo "tools: building gitea $(GITEA_VERSION) from the Go module proxy (about 5 minutes)"
	cd tools/gitea && CGO_ENABLED=1 $(GO) build -trimpath -tags 'sqlite sqlite_unlock_notify' \
		-ldflags "-s -w -X main.Version=$(GITEA_VERSION)" -o $@.tmp code.gitea.io/gitea
	mv $@.tmp $@

# The buildpacks lifecycle from source, packed the way `builder.toml`'s [lifecycle] uri
# expects: lifecycle.toml and lifecycle/ (binaries and phase links), owned by 0:0.
$(LIFECYCLE_TGZ): tools/lifecycle/go.mod tools/lifecycle/go.sum build/builder/lifecycle.toml
	@echo "tools: building lifecycle $(LIFECYCLE_VERSION) from the Go module proxy"
	rm -rf $(CACHE)/lifecycle/out && mkdir -p $(CACHE)/lifecycle/out/lifecycle
	cd tools/lifecycle && for cmd in lifecycle launcher; do \
		CGO_ENABLED=0 $(GO) build -trimpath \
			-ldflags "-s -w -X github.com/buildpacks/lifecycle/cmd.Version=$(LIFECYCLE_VERSION)" \
			-o $(CACHE)/lifecycle/out/lifecycle/$$cmd github.com/buildpacks/lifecycle/cmd/$$cmd; done
	cd $(CACHE)/lifecycle/out/lifecycle && for phase in detector analyzer restorer builder exporter rebaser creator extender; do \
		ln -sf lifecycle $$phase; done
	cp build/builder/lifecycle.toml $(CACHE)/lifecycle/out/
	# Sorted, dated 0, gzip without a name or time: the same sources give the same bytes,
	# so the builder's input hash (and the builder) does not change between checkouts.
	tar -C $(CACHE)/lifecycle/out --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		-cf - lifecycle.toml lifecycle | gzip -n > $@.tmp
	mv $@.tmp $@

# busybox-static from Debian, unpacked here (not installed on the machine).
$(BUSYBOX):
	@echo "tools: fetching busybox-static from Debian"
	rm -rf $(CACHE)/busybox && mkdir -p $(CACHE)/busybox/deb
	cd $(CACHE)/busybox/deb && { apt-get download busybox-static 2>/dev/null || \
		{ apt-get update -qq && apt-get download busybox-static; }; }
	dpkg-deb -x $(CACHE)/busybox/deb/busybox-static_*.deb $(CACHE)/busybox/root
	mkdir -p $(dir $@) && cp $(CACHE)/busybox/root/bin/busybox $@

# OpenSSH's sshd from Debian, unpacked here (not installed on the machine), for the SSH tests
# of gitwatch (internal/testenv/sshd.go runs it on 127.0.0.1 with its own config). With it:
# libwrap0, a library sshd links that a machine without openssh-server lacks, and
# libnss-wrapper, which lets sshd run unprivileged as a made-up "git" user (sshd as root
# wants the sshd user and /run/sshd, which only installing the package creates). Keys are
# generated by the tests in Go, so ssh-keygen is not needed. Fails if sshd still misses a
# library here.
$(CACHE)/openssh/root/usr/sbin/sshd:
	@echo "tools: fetching openssh-server from Debian"
	rm -rf $(CACHE)/openssh && mkdir -p $(CACHE)/openssh/deb
	cd $(CACHE)/openssh/deb && { apt-get download openssh-server libwrap0 libnss-wrapper 2>/dev/null || \
		{ apt-get update -qq && apt-get download openssh-server libwrap0 libnss-wrapper; }; }
	for deb in $(CACHE)/openssh/deb/*.deb; do dpkg-deb -x $$deb $(CACHE)/openssh/root; done
	@missing=$$(LD_LIBRARY_PATH=$$(echo $(CACHE)/openssh/root/usr/lib/*-linux-gnu) ldd $@ | grep 'not found' || true); \
		if [ -n "$$missing" ]; then echo "sshd needs libraries this machine lacks:"; echo "$$missing"; rm -f $@; exit 1; fi
