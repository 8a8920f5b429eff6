#!/usr/bin/env bash
# deps.sh: what `make fuzz` needs beside the normal build: clang ($FUZZ_CC),
# its libFuzzer and sanitizer runtimes (libclang-rt-N-dev) and its OpenMP
# (libomp-dev: the library is built with -fopenmp). As root the missing
# Debian packages are installed, as `make deps` does; otherwise the apt-get
# command is printed and the exit status is 1.
set -u
CC=${FUZZ_CC:-clang}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

missing() { # the packages still missing, one word each
  local m=""
  if ! command -v "$CC" >/dev/null 2>&1; then echo "clang libomp-dev"; return; fi
  local v; v=$("$CC" -dumpversion 2>/dev/null | cut -d. -f1)
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$tmp/f.c"
  "$CC" -fsanitize=fuzzer,address,undefined "$tmp/f.c" -o "$tmp/f" >/dev/null 2>&1 || m="$m libclang-rt-$v-dev"
  printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n' >"$tmp/o.c"
  "$CC" -fopenmp "$tmp/o.c" -o "$tmp/o" >/dev/null 2>&1 || m="$m libomp-dev"
  echo $m
}

need=$(missing)
[ -z "$need" ] && exit 0
if ! command -v "$CC" >/dev/null 2>&1 && [ "$CC" != clang ]; then
  echo "fuzz: FUZZ_CC=$CC is not installed (make fuzz needs clang: FUZZ_CC=clang, the default)"
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "fuzz: $CC cannot build libFuzzer targets here; missing Debian packages: $need"
  echo "fuzz: run: sudo apt-get install -y $need   (or make fuzz as root, which installs them)"
  exit 1
fi
echo "fuzz: installing $need"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq $need >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $need >/dev/null; }
need2=$(missing) # clang may have been missing: now its version is known
if [ -n "$need2" ]; then
  apt-get install -y -qq $need2 >/dev/null || true
  need2=$(missing)
fi
if [ -n "$need2" ]; then
  echo "fuzz: still cannot build libFuzzer targets with $CC (missing: $need2)"
  exit 1
fi
exit 0
