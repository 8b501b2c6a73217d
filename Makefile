# node-doctor. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

OUTPUT   ?= _output
BIN      := $(OUTPUT)/bin/node-doctor
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X github.com/node-doctor/node-doctor/pkg/version.Version=$(VERSION) \
            -X github.com/node-doctor/node-doctor/pkg/version.Revision=$(REVISION)
GO       ?= go
# The Go release the agent is built and tested with (from the Go module proxy):
# it carries the standard-library security fixes the machine's Go may lack.
export GOTOOLCHAIN ?= go1.27.3
ARGS     ?=
IMAGE    ?= node-doctor:$(VERSION)
FUZZTIME ?= 10s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
# Snapshot of the Go vulnerability database served by the module proxy;
# VULNDB=https://vuln.go.dev uses the live one where it can be reached.
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
VULNDB   ?=

.PHONY: help build run test lint vuln bench fuzz image clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## build the node-doctor binary into _output/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/agent

run: build ## build and run 'node-doctor check' against this machine (ARGS="-o json" etc.)
	@# Exit 1 means the report found problems: that is the report, not a make failure.
	@$(BIN) check $(ARGS); rc=$$?; if [ $$rc -gt 1 ]; then exit $$rc; fi

test: ## run unit, privileged (as root) and binary tests
	$(GO) test -count=1 ./...

lint: ## gofmt, go vet and staticcheck (pinned, from the Go module proxy)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags e2e ./test/...

vuln: ## govulncheck: known vulnerabilities reachable from our code (VULNDB_VERSION snapshot, or VULNDB=url)
	@db="$(VULNDB)"; if [ -z "$$db" ]; then db="file://$$(hack/vulndb/build.sh $(VULNDB_VERSION))"; fi; \
		echo "govulncheck -db $$db"; $(GO) run $(GOVULNCHECK) -db "$$db" ./...

bench: ## run the Go benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## fuzz every parser for FUZZTIME each (default 10s)
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

image: ## build the container image with docker (needs a registry for the base images)
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

clean: ## remove build outputs (keeps the Kubernetes binary cache unless CLEAN_ALL=1)
	rm -rf $(OUTPUT)/bin
	@if [ "$(CLEAN_ALL)" = 1 ]; then rm -rf $(OUTPUT); fi

-include hack/e2e.mk
