# routebench: build, test, demo.
#   make            build/routebench and build/librb.a
#   make check      every TAP test in tests/ under prove
#   make sanitize   the same suite built with AddressSanitizer + UBSan (build-san/)
#   make warn-check everything built with -Wall -Wextra -Werror (build-warn/)
#   make deps       install missing Debian packages (as root) or print the command
#   make demo       build, run experiments/quick.yaml, report and plot
# BUILD=dir puts every output under dir (several builds can coexist).

CC      := gcc
BUILD   ?= build
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
# -march=native: the host's vector instructions; -O3 lets gcc vectorise.
OPT     ?= -O3 -march=native
WARN    ?= -Wall -Wextra
SAN     ?=
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g -fopenmp $(WARN) $(SAN) -Icore -Ivariants -I$(BLAS_INC) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp $(SAN) -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB)
LDLIBS  := -lopenblas -lyaml -lsqlite3 -lm

# Debian packages: what the build, tests and demo need.
DEB_PKGS := gcc make libc6-dev libopenblas-openmp-dev libyaml-dev libsqlite3-dev sqlite3 gnuplot-nox bible-kjv perl

LIB_SRC  := $(filter-out core/main.c,$(wildcard core/*.c)) $(wildcard variants/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
HDRS     := $(wildcard core/*.h) $(wildcard variants/*.h) variants/registry.def
LIB      := $(BUILD)/librb.a
BIN      := $(BUILD)/routebench
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_SH  := $(wildcard tests/*.sh)

.PHONY: all check sanitize warn-check deps demo clean tests

all: $(BIN) $(LIB)

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/core/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/tap.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

tests: $(BIN) $(TEST_BIN)

# Tests run from the top directory; shell tests find the program in $RB.
check: deps
	@$(MAKE) --no-print-directory tests
	RB=$(abspath $(BIN)) BUILD=$(BUILD) prove -f $(TEST_BIN) $(TEST_SH)

sanitize: deps
	$(MAKE) --no-print-directory check BUILD=build-san OPT="-O1 -march=native -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

warn-check: deps
	$(MAKE) --no-print-directory BUILD=build-warn WARN="-Wall -Wextra -Werror" all tests

deps:
	@missing=""; \
	for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	    echo "deps: missing Debian packages:$$missing"; \
	    echo "deps: run: sudo apt-get install -y$$missing"; exit 1; \
	fi

# The default text corpus: the King James Bible from Debian's bible-kjv (about
# 4.4 MB, one verse a line). Installs the package when missing and root, else
# prints the apt-get command. Written to a temporary file first, so an
# interrupted run never leaves a half corpus behind.
.PHONY: data
data: data/kjv.txt
data/kjv.txt:
	@if ! command -v bible >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "data: installing bible-kjv"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv; \
	    else \
	        echo "data: needs Debian's bible-kjv: sudo apt-get install -y bible-kjv"; exit 1; \
	    fi; \
	fi
	@mkdir -p data
	bible -f Gen1:1-Rev22:21 > $@.tmp && [ -s $@.tmp ] && mv $@.tmp $@ || { rm -f $@.tmp; echo "data: bible failed"; exit 1; }

demo: deps
	@$(MAKE) --no-print-directory all
	@echo "demo: the sweep runner is not yet implemented (see README); built $(BIN)."
	$(BIN) backends
	$(BIN) sysinfo

# Slurm: install slurmctld, slurmd, slurm-client and munge (as root), then run
# tests/slurm_sweep.sh, which starts a private one-node cluster here, runs a
# small sweep through experiments/slurm.sh as a job array, checks the merged
# database and stops the daemons it started. RB_SLURM_REQUIRED=1: no skipping.
SLURM_PKGS := slurmctld slurmd slurm-client munge
.PHONY: slurm-check
slurm-check: deps
	@missing=""; \
	for p in $(SLURM_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then echo "slurm-check: run as root, or: sudo apt-get install -y$$missing"; exit 1; fi; \
	    echo "slurm-check: installing$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
	fi
	@$(MAKE) --no-print-directory all
	RB=$(abspath $(BIN)) BUILD=$(BUILD) RB_SLURM_REQUIRED=1 prove -v tests/slurm_sweep.sh

clean:
	rm -rf build build-san build-warn
