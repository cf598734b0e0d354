# fsd-launcher: `make help` lists the targets.

GO        ?= go
BIN       ?= bin/fsd-launcher
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
# Bounded fuzzing in `make test`: each target runs this long.
FUZZTIME  ?= 10s

.PHONY: help build test unit race fuzz e2e bench demo lint fmt vet clean

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/fsd-launcher.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/fsd-launcher

demo: build ## Start fsd on the embedded sample tree, use it over 9P, stop it.
	./$(BIN) demo

test: lint race fuzz e2e ## Everything CI runs: lint, race tests, bounded fuzzing, the QEMU guest tests.

unit: ## Quick tests without -race and without the guest.
	$(GO) test -count=1 -short $(PKGS)

race: ## All package tests under the race detector (the guest tests run in e2e).
	$(GO) test -count=1 -race -timeout 30m $$($(GO) list $(PKGS) | grep -v /e2e)

fuzz: ## Each native fuzz target for FUZZTIME (default 10s).
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config
	$(GO) test -run '^$$' -fuzz '^FuzzLineReader$$' -fuzztime $(FUZZTIME) ./readiness
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./fsd/proto
	$(GO) test -run '^$$' -fuzz '^FuzzParseHints$$' -fuzztime $(FUZZTIME) ./oci

e2e: ## Boot QEMU guests that mount the share over 9P (fsd) and virtio-fs (virtiofsd).
	./e2e/install-deps.sh
	FSD_E2E_REQUIRED=1 $(GO) test -count=1 -v -timeout 20m ./e2e/...

bench: build ## Benchmarks against diod, the host and an echo floor; writes BENCHMARKS.md.
	./bench/run.sh

lint: fmt vet ## gofmt and go vet.

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

clean: ## Remove build output.
	rm -rf bin out
