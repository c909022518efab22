# Parley: `make run` starts the server on its embedded default; `make test`
# installs what the tests need and runs every test.
SHELL := /bin/bash
GOBIN ?= $(shell go env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# The plugins must match the grpc-gateway runtime in go.mod.
GRPC_GATEWAY_VERSION := v2.34.0

.PHONY: run test test-go test-web test-mobile tools generate lint check-generated bench

run:
	go run ./server/cmd/parleyd

# Every test: Go (race detector on), the web app (unit + headless Chromium)
# and the React Native app (jest against a real parleyd).
test: tools test-go test-web test-mobile

test-go:
	go test -race -count=1 ./...

test-web:
	bash clients/web/scripts/ci.sh

test-mobile:
	bash clients/mobile/scripts/ci.sh

tools:
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

generate: tools
	buf generate

lint: tools
	buf lint
	go vet ./...

# Fails when the committed generated code (Go, grpc-gateway handlers and the
# OpenAPI document the bridge serves) differs from a fresh generation, or a
# generated file is not committed.
GENERATED := proto/gen bridge/openapi
check-generated: generate
	git diff --exit-code -- $(GENERATED)
	@untracked=$$(git status --porcelain -- $(GENERATED)); \
	if [ -n "$$untracked" ]; then echo "generated but not committed:"; echo "$$untracked"; exit 1; fi

bench:
	go test -run '^$$' -bench . -benchmem ./...
