#!/usr/bin/env bash
# report_readonly.sh: the commands that only read a results database (report,
# plot, compare) work on a database in a read-only directory and leave no
# -wal or -shm file behind anywhere; creating a database in a read-only
# directory says the directory is not writable. Root writes through
# permission bits, so as root the read-only part runs as user nobody.
. "$(dirname "$0")/tap.bash"
rb_abs
X=$TOP/experiments/example.yaml
tmp=$(mktemp -d); chmod 755 "$tmp"
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
as_user() { if [ "$(id -u)" = 0 ]; then su nobody -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
if [ "$(id -u)" = 0 ] && ! su nobody -s /bin/sh -c "test -x '$RB'" 2>/dev/null; then
  echo "1..0 # SKIP user nobody cannot run $RB"; exit 0
fi

mkdir "$tmp/w" "$tmp/ro" "$tmp/out"; chmod 777 "$tmp/out"
"$RB" run "$X" --db "$tmp/w/r.db" --threads 1 --no-sgemm --quiet --filter dense >/dev/null 2>&1
ok $? "a small database to read"
"$RB" report "$tmp/w/r.db" >/dev/null 2>&1 && "$RB" compare "$tmp/w/r.db" --baseline "$tmp/w/r.db" >/dev/null 2>&1
ok $? "report and compare in a writable directory"
[ ! -e "$tmp/w/r.db-wal" ] && [ ! -e "$tmp/w/r.db-shm" ]; ok $? "no -wal or -shm left there: $(ls "$tmp/w" | tr '\n' ' ')"

cp "$tmp/w/r.db" "$tmp/ro/r.db"; chmod 644 "$tmp/ro/r.db"; chmod 555 "$tmp/ro"
as_user "'$RB' report '$tmp/ro/r.db'" >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "dense" "$tmp/o"; ok $? "report on a database in a read-only directory (rc $rc: $(head -c 150 "$tmp/o"))"
as_user "'$RB' compare '$tmp/ro/r.db' --baseline '$tmp/ro/r.db'" >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ]; ok $? "compare there (rc $rc)"
as_user "'$RB' plot '$tmp/ro/r.db' --dumb --only scaling --out '$tmp/out'" >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ]; ok $? "plot --dumb there (rc $rc)"
[ "$(ls "$tmp/ro")" = r.db ]; ok $? "nothing written beside it: $(ls "$tmp/ro" | tr '\n' ' ')"
as_user "'$RB' run '$X' --db '$tmp/ro/new.db' --no-sgemm --quiet" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "not writable" "$tmp/o"; ok $? "creating a database there: exit 2, 'not writable' (rc $rc: $(head -c 150 "$tmp/o"))"
tap_end
