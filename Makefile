# routebench: build, test, demo.
#   make            build/routebench and build/librb.a
#   make check      every TAP test in tests/ under prove
#   make sanitize   the same suite built with AddressSanitizer + UBSan (build-san/)
#   make warn-check everything built with -Wall -Wextra -Werror (build-warn/)
#   make mutate     plant each slip of tests/mutants.txt in a copy of the tree and run its tests
#                   (every one must fail; MUTATE_JOBS=N in parallel, MUTATE_FILTER=text to pick some)
#   make deps       install missing Debian packages (as root) or print the command
#   make demo       build, run experiments/quick.yaml and quick_copy.yaml, report and plot
#   make results    regenerate the README's results section from results/published/*.db
#   make reproduce-paper  rerun every published experiment from scratch (hours; resumes)
#   make fuzz       every libFuzzer target of tests/fuzz/ for FUZZ_SECONDS (60) each, built with
#                   clang into build-fuzz/; fails on a crash, leak, sanitizer report or timeout
# BUILD=dir puts every output under dir (several builds can coexist).

CC      := gcc
BUILD   ?= build
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
# -march=native: the host's vector instructions; -O3 lets gcc vectorise.
OPT     ?= -O3 -march=native
WARN    ?= -Wall -Wextra
SAN     ?=
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g -fopenmp $(WARN) $(SAN) -Icore -I$(BLAS_INC) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp $(SAN) -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB)
LDLIBS  := -lopenblas -lyaml -lsqlite3 -lm

# Debian packages: what the build, tests and demo need.
DEB_PKGS := gcc make libc6-dev libopenblas-openmp-dev libyaml-dev libsqlite3-dev sqlite3 gnuplot-nox bible-kjv perl

LIB_SRC  := $(filter-out core/cli/main.c,$(wildcard core/*/*.c)) $(wildcard variants/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
HDRS     := $(wildcard core/*/*.h) $(wildcard core/*/*.def) $(wildcard variants/*.h) variants/registry.def
LIB      := $(BUILD)/librb.a
BIN      := $(BUILD)/routebench
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# tests/mutate.sh is `make mutate`, not a test of its own
TEST_SH  := $(filter-out tests/mutate.sh,$(wildcard tests/*.sh))

# Fuzz targets (tests/fuzz/fuzz_NAME.c), one per parser of untrusted input.
# `make tests` builds each with tests/fuzz/replay.c as $(BUILD)/fuzz/replay_NAME,
# which tests/fuzz_replay.sh runs on the kept crashes and the seed corpus.
FUZZ_TARGETS := experiment train_config npy checkpoint manifest flags
REPLAY_BIN   := $(patsubst %,$(BUILD)/fuzz/replay_%,$(FUZZ_TARGETS))

.PHONY: all check sanitize warn-check deps demo demo-sweeps clean tests install have-deps mutate fuzz fuzz-deps

all: have-deps $(BIN) $(LIB)

# Before compiling: are the libraries' headers there? A fresh machine gets a
# line naming the packages and `make deps` instead of a linker error.
have-deps:
	@missing=""; \
	[ -f $(BLAS_INC)/cblas.h ] || missing="$$missing libopenblas-openmp-dev"; \
	[ -f /usr/include/yaml.h ] || missing="$$missing libyaml-dev"; \
	[ -f /usr/include/sqlite3.h ] || missing="$$missing libsqlite3-dev"; \
	command -v $(CC) >/dev/null || missing="$$missing $(CC)"; \
	if [ -n "$$missing" ]; then \
	    echo "make: missing Debian packages:$$missing"; \
	    echo "make: run \`make deps\` (as root it installs them; otherwise it prints the apt-get command)"; \
	    exit 1; \
	fi

# make install [PREFIX=/usr/local] [DESTDIR=]: the one program.
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/routebench

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/core/cli/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/fuzz/replay_%: tests/fuzz/replay.c tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz -o $@ tests/fuzz/replay.c tests/fuzz/fuzz_$*.c $(LIB) $(LDFLAGS) $(LDLIBS)

# The libFuzzer binaries: only in the clang build `make fuzz` makes.
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(LIB) $(LDFLAGS) -fsanitize=fuzzer $(LDLIBS)

tests: $(BIN) $(TEST_BIN) $(REPLAY_BIN)

# Tests run from the top directory; shell tests find the program in $RB.
check: deps
	@$(MAKE) --no-print-directory have-deps tests
	RB=$(abspath $(BIN)) BUILD=$(BUILD) prove -f $(TEST_BIN) $(TEST_SH)

sanitize: deps
	$(MAKE) --no-print-directory check BUILD=build-san OPT="-O1 -march=native -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

warn-check: deps
	tests/layering.sh >/dev/null || { tests/layering.sh | grep '^not ok'; exit 1; }
	$(MAKE) --no-print-directory BUILD=build-warn WARN="-Wall -Wextra -Werror" all tests

# Fuzzing: clang (installed as root when missing, as `make deps` does; else
# the apt-get command is printed) builds the library and every target with
# libFuzzer, AddressSanitizer and UBSan into build-fuzz/ (never build/), then
# tests/fuzz/run.sh runs each target for FUZZ_SECONDS from the seed corpus
# and the kept crashes. A crash, leak, sanitizer report, timeout (an input
# slower than FUZZ_TIMEOUT s) or out-of-memory fails it, and the reproducer's
# path under build-fuzz/fuzz/artifacts/ is printed. FUZZ_TARGETS="npy flags"
# runs only those.
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
fuzz: deps fuzz-deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="-O1 -march=native" WARN="-Wall" \
	    SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(patsubst %,$(FUZZ_BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-deps:
	@FUZZ_CC=$(FUZZ_CC) tests/fuzz/deps.sh

# Mutation testing: tests/mutate.sh reads tests/mutants.txt, plants each
# single-line slip in a copy of the working tree, rebuilds only what the
# slip's tests need, runs them and prints a table; it fails unless every
# mutant is killed and none is stale (its line gone from the code).
mutate: deps
	MUTATE_JOBS=$${MUTATE_JOBS:-2} tests/mutate.sh $(MUTATE_FILTER)

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

# demo: experiments/quick.yaml (one attention layer, every backend, seq 256
# to 8192) and experiments/quick_copy.yaml (brief copy-task training): each
# writes results/NAME.db afresh (a demo measures this machine now; the
# previous database is kept as results/NAME.previous.db), prints its report
# and draws plots/out/NAME/.
# Each entry is EXPERIMENT:FIGURES (the figures that have data for it).
DEMO_EXPS := quick:scaling,memory quick_copy:curves,tradeoff
demo: deps
	@$(MAKE) --no-print-directory all
	$(BIN) sysinfo
	@$(MAKE) --no-print-directory demo-sweeps

# The demo's sweeps: each measured afresh, the previous database kept as
# NAME.previous.db (a rerun of make demo says so instead of reprinting old
# tables). DEMO_OUT, DEMO_PLOTS and DEMO_ARGS (extra `run` options) exist for
# tests/make_targets.sh.
DEMO_OUT   ?= results
DEMO_PLOTS ?= plots/out
DEMO_ARGS  ?=
demo-sweeps:
	@for x in $(DEMO_EXPS); do \
	    e=$${x%%:*}; db=$(DEMO_OUT)/$$e.db; \
	    if [ -f $$db ]; then \
	        mv -f $$db $(DEMO_OUT)/$$e.previous.db; rm -f $$db-wal $$db-shm; \
	        echo "demo: measuring afresh; the previous results are kept in $(DEMO_OUT)/$$e.previous.db"; \
	    fi; \
	    echo "demo: routebench run experiments/$$e.yaml"; \
	    $(BIN) run experiments/$$e.yaml --db $$db $(DEMO_ARGS) || exit $$?; \
	    $(BIN) report $$db || exit $$?; \
	    $(BIN) plot $$db --out $(DEMO_PLOTS)/$$e --only $${x#*:} || exit $$?; \
	done

# Published results: the databases behind the README's Results section, one
# per experiment, committed under results/published/ (the one folder of
# results/ that git tracks). Each entry is EXPERIMENT:FIGURES:REPORT-OPTIONS
# (figures `routebench plot` draws for the README; extra report tables).
PUB_DIR  ?= results/published
PUB_EXPS := quick:scaling,memory: \
            scaling:scaling,crossover:--crossover \
            scaling_long:scaling,memory: \
            paper_small:curves_step,tradeoff: \
            ablate_clusters:tradeoff,curves_step: \
            ablate_window:tradeoff,heatmap: \
            length_quality:crossover,tradeoff:--crossover \
            copy:curves_step: \
            analyze_hybrid:kept_mass:--jsd

# results: the README's results section, regenerated from the published
# databases without rerunning anything (seconds): between the
# <!-- results:begin --> and <!-- results:end --> lines of README.md, for
# each experiment of PUB_EXPS whose $(PUB_DIR)/NAME.db exists, its report
# (and extra tables) and its figures, copied to plots/readme/ (tracked).
# PUB_DIR=results/reproduce shows a reproduction instead.
# (RESULTS_README and RESULTS_PLOTS: where the section and figures go; the
# tests point them elsewhere.)
RESULTS_README ?= README.md
RESULTS_PLOTS  ?= plots/readme
.PHONY: results
results: deps
	@$(MAKE) --no-print-directory all
	@grep -q '^<!-- results:begin -->$$' $(RESULTS_README) && grep -q '^<!-- results:end -->$$' $(RESULTS_README) || \
	    { echo "results: $(RESULTS_README) lacks the <!-- results:begin --> / <!-- results:end --> lines"; exit 1; }
	@mkdir -p $(RESULTS_PLOTS) $(BUILD)/results
	@{ echo '<!-- results:begin -->'; \
	   echo "_Generated by \`make results\` from $(PUB_DIR)/ at commit $$(git rev-parse --short HEAD 2>/dev/null || echo unknown); do not edit by hand. Each database records the machine, the load and the sgemm ceiling it was measured with._"; \
	   for x in $(PUB_EXPS); do \
	     e=$${x%%:*}; r=$${x#*:}; figs=$${r%%:*}; extra=$${r#*:}; db=$(PUB_DIR)/$$e.db; \
	     [ -f $$db ] || { echo "results: no $$db (make reproduce-paper makes it)" >&2; continue; }; \
	     echo; echo "### \`experiments/$$e.yaml\`"; \
	     echo; awk '/^# Duration/ { on = 1 } on && (!/^# / || /^# Reproduce/) { exit } on { sub(/^# /, ""); print }' \
	       experiments/$$e.yaml; \
	     echo; $(BIN) report $$db || exit 1; \
	     for o in $$extra; do echo; $(BIN) report $$db $$o || exit 1; done; \
	     rm -rf $(BUILD)/results/$$e; \
	     $(BIN) plot $$db --out $(BUILD)/results/$$e --quiet --only $$figs >&2 || exit 1; \
	     echo; for f in $$(echo $$figs | tr , ' '); do \
	       cp $(BUILD)/results/$$e/$$f.png $(RESULTS_PLOTS)/$${e}_$$f.png || exit 1; \
	       echo "![$$e: $$f](plots/readme/$${e}_$$f.png)"; \
	     done; \
	   done; \
	   echo '<!-- results:end -->'; } > $(BUILD)/results.md
	@awk -v gen=$(BUILD)/results.md ' \
	    /^<!-- results:begin -->$$/ { while ((getline l < gen) > 0) print l; skip = 1; next } \
	    /^<!-- results:end -->$$/ { skip = 0; next } \
	    !skip { print }' $(RESULTS_README) > $(BUILD)/README.md.new && mv $(BUILD)/README.md.new $(RESULTS_README)
	@echo "results: $(RESULTS_README) results section and $(RESULTS_PLOTS)/*.png regenerated from $(PUB_DIR)/"

# reproduce-paper: every published experiment run from scratch into
# REPRO_DIR (default results/reproduce/, never the published folder), one
# after the other, after printing each one's measured duration; rerun it to
# resume where it stopped (the runner skips finished trials and resumes a
# training trial from its checkpoint). Then `make results
# PUB_DIR=results/reproduce` shows the reproduction in the README, and
# copying its databases to results/published/ publishes them.
REPRO_DIR ?= results/reproduce
.PHONY: reproduce-paper
reproduce-paper: deps data
	@$(MAKE) --no-print-directory all
	@echo "reproduce-paper: into $(REPRO_DIR)/; measured durations on an idle 2-core machine:"
	@for x in $(PUB_EXPS); do e=$${x%%:*}; \
	    printf '  %-16s %s\n' $$e "$$(sed -n 's/^# Duration[^:]*: *//p' experiments/$$e.yaml | head -1)"; done
	@mkdir -p $(REPRO_DIR)
	@for x in $(PUB_EXPS); do e=$${x%%:*}; \
	    echo "reproduce-paper: routebench run experiments/$$e.yaml --db $(REPRO_DIR)/$$e.db"; \
	    $(BIN) run experiments/$$e.yaml --db $(REPRO_DIR)/$$e.db || exit $$?; \
	done
	@echo "reproduce-paper: done; \`make results PUB_DIR=$(REPRO_DIR)\` puts it in the README"

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
	rm -rf build build-san build-warn build-fuzz
