#!/usr/bin/env bash
# make_targets.sh: what the Makefile promises a new user: plain `make` on a
# machine without the libraries names the missing packages and `make deps`
# (instead of a linker error), `make install` puts the program under
# DESTDIR/PREFIX, and `make results` rewrites the README's results section
# from the published databases without running anything.
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
# make demo's sweeps twice (the quick experiment cut to two trials, into a
# temporary folder): the second measures afresh, says so, and keeps the first
# database as quick.previous.db (issue 15, item 14)
mkdir -p "$tmp/demo"
demo() {
  make -s demo-sweeps BUILD="$B" DEMO_EXPS=quick:scaling DEMO_OUT="$tmp/demo" DEMO_PLOTS="$tmp/demo/plots" \
      DEMO_ARGS="--set 'sweep.seq=[256]' --set 'sweep.backend=[dense, local]' --no-sgemm --quiet" >"$1" 2>&1
}
demo "$tmp/d1"; rc1=$?
uid1=$(sqlite3 "$tmp/demo/quick.db" "SELECT group_concat(uid) FROM experiments" 2>/dev/null)
demo "$tmp/d2"; rc2=$?
uid_prev=$(sqlite3 "$tmp/demo/quick.previous.db" "SELECT group_concat(uid) FROM experiments" 2>/dev/null)
uid2=$(sqlite3 "$tmp/demo/quick.db" "SELECT group_concat(uid) FROM experiments" 2>/dev/null)
done2=$(sqlite3 "$tmp/demo/quick.db" "SELECT count(*) FROM trials WHERE status='done'" 2>/dev/null)
[ $rc1 = 0 ] && [ $rc2 = 0 ] && ! grep -q "measuring afresh" "$tmp/d1" &&
    grep -q "measuring afresh; the previous results are kept in $tmp/demo/quick.previous.db" "$tmp/d2" &&
    [ -n "$uid1" ] && [ "$uid_prev" = "$uid1" ] && [ -n "$uid2" ] && [ "$uid2" != "$uid1" ] && [ "$done2" = 2 ] &&
    [ -s "$tmp/demo/plots/quick/scaling.png" ]
ok $? "make demo again measures afresh, says so and keeps the previous database (rc $rc1 $rc2; runs $uid1 / $uid_prev / $uid2; $done2 done)"

# make results on a copy of the README, from a folder holding one small
# published database (the quick experiment cut to two trials)
RB=${RB:-$B/routebench}
mkdir -p "$tmp/pub" "$tmp/plots"
"$RB" run experiments/quick.yaml --db "$tmp/pub/quick.db" --set 'sweep.seq=[256]' --set 'sweep.backend=[dense, local]' \
    --no-sgemm --quiet >"$tmp/o" 2>&1
cp README.md "$tmp/README.md"
make -s results BUILD="$B" PUB_DIR="$tmp/pub" RESULTS_README="$tmp/README.md" RESULTS_PLOTS="$tmp/plots" >"$tmp/o" 2>&1; rc=$?
sec=$(sed -n '/^<!-- results:begin -->$/,/^<!-- results:end -->$/p' "$tmp/README.md")
[ $rc = 0 ] && echo "$sec" | grep -q '^### `experiments/quick.yaml`' && echo "$sec" | grep -q '^| dense ' &&
    echo "$sec" | grep -q '^| local ' && echo "$sec" | grep -q '(plots/readme/quick_scaling.png)' &&
    [ -s "$tmp/plots/quick_scaling.png" ] && [ -s "$tmp/plots/quick_memory.png" ] &&
    ! echo "$sec" | grep -q 'experiments/paper_small.yaml' && grep -q "no $tmp/pub/paper_small.db" "$tmp/o"
ok $? "make results: the section holds the published database's report and figures, and names the missing ones (rc $rc)"
diff <(sed '/^<!-- results:begin -->$/,/^<!-- results:end -->$/d' README.md) \
     <(sed '/^<!-- results:begin -->$/,/^<!-- results:end -->$/d' "$tmp/README.md") >/dev/null
ok $? "make results leaves the rest of the README as it was"
tap_end
