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

# The edge bundles come first: tests/edge_bundles.rs runs them (the aarch64 one under qemu) and
# must not skip here. Both builds are incremental, so a second `make test` costs seconds.
test: edge-bundles
	LKD_REQUIRE_EDGE_BUNDLES=1 $(CARGO) test --workspace --no-fail-fast -- --test-threads=2
	$(CARGO) test --manifest-path fuzz/Cargo.toml

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin lkd

bench:
	$(CARGO) bench --workspace

# The paper's comparison (hours on 2 cores). Resumable: run it again to continue where it
# stopped. Publishes the tables, CSV and chart under docs/results/.
STUDY ?= fmnist
.PHONY: study
study: release
	./target/release/lkd study configs/study-$(STUDY).toml --out studies/$(STUDY)
	mkdir -p docs/results
	cp studies/$(STUDY)/results.md docs/results/study-$(STUDY).md
	cp studies/$(STUDY)/results.csv docs/results/study-$(STUDY).csv
	cp studies/$(STUDY)/results-seeds.csv docs/results/study-$(STUDY)-seeds.csv
	cp studies/$(STUDY)/results.png docs/results/study-$(STUDY).png

# Pretrained vs scratch vs linear probe on Fashion-MNIST halves (minutes on 2 cores); resumable.
.PHONY: transfer
# LKD's folder loader vs torchvision ImageFolder + DataLoader (README "Own photos, loaded fast").
.PHONY: loader-bench
loader-bench:
	$(CARGO) build --release -p lkd-trainer --example folder_loader_epoch
	$(LKD_PYTHON) benches/folder_loader_vs_torchvision.py

# Two minutes of 4 keep-alive clients against `lkd-run serve` on loopback; fails on RSS growth
# over 5 % or any answer not 200 (README "Serving").
.PHONY: serve-soak
serve-soak:
	$(CARGO) build -p lkd-runtime --bin lkd-run
	$(LKD_PYTHON) scripts/serve_figures.py --lkd-run target/debug/lkd-run --only-soak --soak 120 --soak-clients 4

transfer: release
	LKD=./target/release/lkd LKD_PYTHON=$(LKD_PYTHON) bash benches/transfer.sh

doctor: build
	./target/debug/lkd doctor

# Prints the environment for a shell: eval "$(make -s env)"
env:
	@sed -n 's/^export \([A-Z_]*\) := \(.*\)$$/export \1="\2"/p' $(ENV_MK)

# The device bundle (dist/ holds build outputs only): stripped lkd-run + libonnxruntime + licences + device-check.sh + README, and
# a .tar.gz of it; linked against glibc 2.28 symbols (cargo-zigbuild). It runs from any directory
# with no environment (the library is found beside the binary).
#   make edge                                  -> dist/lkd-edge/         (x86_64)
#   make edge TARGET=aarch64-unknown-linux-gnu -> dist/lkd-edge-aarch64/ (ARM64 boards)
# scripts/bootstrap_aarch64.sh installs what the builds need (zig, rustup target, the aarch64 wheel).
TARGET ?= x86_64-unknown-linux-gnu
.PHONY: edge edge-bundles
edge:
	bash scripts/build_edge.sh $(TARGET)

edge-bundles:
	bash scripts/build_edge.sh x86_64-unknown-linux-gnu
	bash scripts/build_edge.sh aarch64-unknown-linux-gnu

# Fuzz each parser of untrusted files for FUZZ_SECONDS (nightly + cargo-fuzz), seeded from the
# committed fuzz/corpus/<target>/ (new inputs go to fuzz/.work/, not the repo). Crashes land in
# fuzz/artifacts/<target>/: minimize them (`cargo +nightly fuzz tmin`) into fuzz/corpus/<target>/.
# `make test` replays fuzz/corpus with a plain `cargo test` (no nightly).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := pth safetensors onnx_metadata openvino_metadata image_decode preprocess_pixels
.PHONY: fuzz fuzz-replay
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --version 0.13.2 --locked
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p .work/$$t && \
		cargo +nightly fuzz run $$t .work/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 || exit 1; \
	done

fuzz-replay:
	$(CARGO) test --manifest-path fuzz/Cargo.toml
