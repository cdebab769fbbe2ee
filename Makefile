# Entry point. Every target first bootstraps (idempotently, only what is missing): the pinned
# Python venv with torch/onnxruntime/onnx in $(LKD_CACHE), the Fashion-MNIST Debian package,
# and the environment cargo and the binaries need (written to $(LKD_CACHE)/env.mk).
SHELL := /bin/bash
export LKD_CACHE ?= $(HOME)/.cache/lkd
ENV_MK := $(shell bash scripts/bootstrap.sh)
ifeq ($(ENV_MK),)
$(error bootstrap failed: see the messages above)
endif
include $(ENV_MK)

CARGO ?= cargo
DEMO_ARGS ?=

.PHONY: demo test build release bench doctor clean-runs

demo: release
	./target/release/lkd demo $(DEMO_ARGS)

test:
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin lkd

bench:
	$(CARGO) bench --workspace

doctor: build
	./target/debug/lkd doctor

# Prints the environment for a shell: eval "$(make -s env)"
env:
	@sed -n 's/^export \([A-Z_]*\) := \(.*\)$$/export \1="\2"/p' $(ENV_MK)

# The device bundle: dist/lkd-edge/ = stripped lkd-run + libonnxruntime + licences + README.
# It runs from any directory with no environment (the library is found beside the binary).
.PHONY: edge
edge:
	$(CARGO) build --release -p lkd-runtime --bin lkd-run
	bash scripts/edge_bundle.sh target/release/lkd-run "$(ORT_DYLIB_PATH)" dist/lkd-edge
