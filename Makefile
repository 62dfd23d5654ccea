# vtpm-mfg build and test entry points.
GO ?= go
BIN := bin/vtpm-mfg

.PHONY: build test demo bench fuzz vet clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/vtpm-mfg

# The full test suite. The simulator cross-check needs cgo and OpenSSL
# headers (Debian: libssl-dev); scripts/test.sh installs them when missing.
test:
	./scripts/test.sh

demo: build
	./scripts/demo.sh $(BIN)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 100x ./internal/...

# Every fuzz target, one after another, FUZZTIME each; FUZZ picks targets
# by name (a regular expression), e.g. make fuzz FUZZ=FuzzOpen FUZZTIME=10m.
FUZZTIME ?= 60s
FUZZ ?= .
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ='$(FUZZ)' ./scripts/fuzz.sh

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
