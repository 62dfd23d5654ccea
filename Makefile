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

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./internal/nv/

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
