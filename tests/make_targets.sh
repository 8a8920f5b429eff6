#!/usr/bin/env bash
# make_targets.sh: what the Makefile promises a new user: plain `make` on a
# machine without the libraries names the missing packages and `make deps`
# (instead of a linker error), and `make install` puts the program under
# DESTDIR/PREFIX.
. "$(dirname "$0")/tap.bash"
cd "$TOP" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
B=${BUILD:-build}

# a machine without OpenBLAS's headers, as the Makefile sees it
make -s have-deps BLAS_INC="$tmp/no-openblas" >"$tmp/o" 2>&1; rc=$?
[ $rc != 0 ] && grep -q "missing Debian packages: libopenblas-openmp-dev" "$tmp/o" && grep -q "make deps" "$tmp/o"
ok $? "make without the packages names them and make deps (rc $rc: $(head -c 200 "$tmp/o" | tr '\n' ' '))"
make -s have-deps >"$tmp/o" 2>&1; ok $? "with them, nothing to say"

make -s install BUILD="$B" DESTDIR="$tmp/root" PREFIX=/opt/rb >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ] && [ -x "$tmp/root/opt/rb/bin/routebench" ] && "$tmp/root/opt/rb/bin/routebench" backends --names | grep -qx dense
ok $? "make install DESTDIR=... PREFIX=/opt/rb installs a working routebench (rc $rc)"
tap_end
