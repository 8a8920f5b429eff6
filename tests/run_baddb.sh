#!/usr/bin/env bash
# run_baddb.sh: bad databases and interruptions. A path that cannot be
# created, a file that is not SQLite, an SQLite file of another program, a
# newer schema, a database of another experiment, a corrupt file and a locked
# one each give a clear message naming the file, exit status 2, no crash, and
# leave every row that was there. SIGINT/SIGTERM mark the trial in flight
# interrupted, keep what was committed and exit 130; a rerun finishes the
# sweep. A trial failing at run time is recorded with its error and the sweep
# goes on (exit 1).
#
# Read-only directory: tests run as root, and root writes through permission
# bits, so a chmod'ed directory proves nothing. Instead the database path is
# put where no process can create a file: under a regular file
# (/dev/null/x.db: ENOTDIR) and inside procfs (/proc/x.db), which refuses file
# creation for root too.
. "$(dirname "$0")/tap.bash"
Y=$TESTS/yaml
X=$TOP/experiments/example.yaml
tmp=$(mktemp -d); pid=; lockpid=
trap 'kill -9 $pid $lockpid 2>/dev/null; rm -rf "$tmp"' EXIT
command -v sqlite3 >/dev/null || { echo "1..0 # SKIP sqlite3 not installed"; exit 0; }
q() { sqlite3 -cmd ".timeout 5000" "$1" "$2"; }
run() { "$RB" run "$X" --threads 1 --no-sgemm --quiet "$@"; }
msg() { head -c 250 "$tmp/o" | tr '\n' ' '; }

for p in /dev/null/x.db /proc/x.db "$tmp/no/such/dir/x.db" "$tmp"; do
  run --db "$p" >"$tmp/o" 2>&1; rc=$?
  ok $([ $rc = 2 ] && grep -qF "$p" "$tmp/o"; echo $?) "--db $p: exit 2 naming the path ($rc: $(msg))"
done

printf 'precious notes, not a database\n' >"$tmp/notes.db"; cp "$tmp/notes.db" "$tmp/notes.orig"
run --db "$tmp/notes.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "notes.db: not an SQLite database" "$tmp/o"; echo $?) "a text file: exit 2 ($rc: $(msg))"
cmp -s "$tmp/notes.db" "$tmp/notes.orig" && [ ! -e "$tmp/notes.db-wal" ]; ok $? "the text file is left as it was"

sqlite3 "$tmp/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (7);"
run --db "$tmp/app.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "app.db: .*not one routebench wrote" "$tmp/o"; echo $?) "another program's SQLite file: exit 2 ($rc: $(msg))"
ok $([ "$(q "$tmp/app.db" "SELECT x FROM t")" = 7 ] && [ "$(q "$tmp/app.db" "SELECT count(*) FROM sqlite_master")" = 1 ]; echo $?) "and left as it was"

run --db "$tmp/good.db" --filter 'dense-n64'; ok $? "a small run for the next checks"
rows=$(q "$tmp/good.db" "SELECT count(*) FROM metrics")
cp "$tmp/good.db" "$tmp/newer.db"; q "$tmp/newer.db" "PRAGMA user_version=7"
run --db "$tmp/newer.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "newer.db: written by a newer routebench (schema version 7" "$tmp/o"; echo $?) "a newer schema: exit 2 saying why ($rc: $(msg))"
ok $([ "$(q "$tmp/newer.db" "SELECT count(*) FROM metrics")" = "$rows" ]; echo $?) "and its rows are kept"

"$RB" run "$Y/good_resume.yaml" --db "$tmp/good.db" --threads 1 --no-sgemm >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "good.db: holds results of experiment 'example', not 'resume'" "$tmp/o"; echo $?) "a database of another experiment: exit 2 ($rc: $(msg))"
ok $([ "$(q "$tmp/good.db" "SELECT count(*) FROM metrics")" = "$rows" ] && [ "$(q "$tmp/good.db" "SELECT count(*) FROM experiments")" = 1 ]; echo $?) "and nothing was added to it"

# corrupt: garbage over the pages after the header
cp "$tmp/good.db" "$tmp/bad.db"; q "$tmp/bad.db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
size=$(stat -c %s "$tmp/bad.db")
head -c $((size - 100)) /dev/urandom | dd of="$tmp/bad.db" bs=1 seek=100 conv=notrunc status=none
run --db "$tmp/bad.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "bad.db" "$tmp/o"; echo $?) "a corrupt database: exit 2 naming it, no crash ($rc: $(msg))"

# locked: another connection holds the write lock for longer than the busy timeout
( echo "BEGIN IMMEDIATE; INSERT INTO metrics VALUES (1, NULL, 'lock', 0);"; sleep 7 ) | sqlite3 "$tmp/good.db" >/dev/null 2>&1 &
lockpid=$!
sleep 0.5
t0=$(date +%s)
run --db "$tmp/good.db" >"$tmp/o" 2>&1; rc=$?
ok $([ $rc = 2 ] && grep -q "good.db: .*locked" "$tmp/o"; echo $?) "a locked database: exit 2 after the busy timeout ($rc, $(( $(date +%s) - t0 ))s: $(msg))"
kill $lockpid 2>/dev/null; wait $lockpid 2>/dev/null; lockpid=
ok $([ "$(q "$tmp/good.db" "SELECT count(*) FROM metrics")" = "$rows" ]; echo $?) "the locked database keeps its rows"

# SIGINT and SIGTERM: the trial in flight is interrupted, the rest kept, exit 130
for sig in INT TERM; do
  db=$tmp/sig$sig.db
  "$RB" run "$Y/good_resume.yaml" --db "$db" --threads 1 --no-sgemm --quiet & pid=$!
  for i in $(seq 1 600); do
    d=$(q "$db" "SELECT count(*) FROM trials WHERE status='done'" 2>/dev/null || echo 0)
    [ "${d:-0}" -ge 1 ] && break
    sleep 0.05
  done
  kill -$sig $pid; wait $pid; rc=$?; pid=
  ok $([ $rc = 130 ]; echo $?) "SIG$sig: exit 130 (got $rc)"
  d=$(q "$db" "SELECT count(*) FROM trials WHERE status='done'")
  ok $([ "$(q "$db" "SELECT count(*) FROM trials WHERE status='interrupted' AND error LIKE '%signal%'")" = 1 ] && [ "$d" -ge 1 ] && [ "$d" -lt 8 ]; echo $?) "SIG$sig: one trial interrupted, $d done kept"
  ok $([ "$(q "$db" "SELECT count(*) FROM trials WHERE status IN ('running')")" = 0 ] && [ "$(q "$db" "SELECT status FROM experiments")" = interrupted ]; echo $?) "SIG$sig: nothing left running, the run is marked interrupted"
  ok $([ "$(q "$db" "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE t.status <> 'done'")" = 0 ]; echo $?) "SIG$sig: no metrics of the interrupted trial"
done
"$RB" run "$Y/good_resume.yaml" --db "$tmp/sigINT.db" --threads 1 --no-sgemm --quiet; rc=$?
ok $([ $rc = 0 ] && [ "$(q "$tmp/sigINT.db" "SELECT count(*) FROM trials WHERE status='done'")" = 8 ]; echo $?) "after Ctrl-C the same command finishes the sweep"
# a second Ctrl-C ends at once
"$RB" run "$Y/good_resume.yaml" --db "$tmp/twice.db" --threads 1 --no-sgemm --quiet & pid=$!
sleep 0.5; kill -INT $pid; kill -INT $pid; wait $pid; rc=$?; pid=
ok $([ $rc = 130 ]; echo $?) "two Ctrl-C: exit 130 at once (got $rc)"
q "$tmp/twice.db" "PRAGMA integrity_check" >"$tmp/o" 2>&1
ok $([ "$(cat "$tmp/o")" = ok ]; echo $?) "and the database is intact"

# a trial failing at run time is recorded and the sweep goes on
"$RB" run "$Y/good_train.yaml" --db "$tmp/tr.db" --threads 1 --no-sgemm --quiet 2>"$tmp/o"; rc=$?
ok $([ $rc = 1 ]; echo $?) "a failed trial: exit 1 (got $rc)"
ok $([ "$(q "$tmp/tr.db" "SELECT status FROM trials WHERE lr > 1")" = failed ] && q "$tmp/tr.db" "SELECT error FROM trials WHERE lr > 1" | grep -qi "nan\|finite"; echo $?) "it is recorded failed with its error ($(q "$tmp/tr.db" "SELECT error FROM trials WHERE lr > 1"))"
ok $([ "$(q "$tmp/tr.db" "SELECT status FROM trials WHERE lr < 1")" = done ]; echo $?) "the next trial still ran (done)"
ok $([ "$(q "$tmp/tr.db" "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.lr < 1 AND m.name='train_loss' AND m.step IS NOT NULL")" = 3 ]; echo $?) "training loss recorded per step (3 steps)"
for m in eval_loss bits_per_token accuracy fwd_ms bwd_ms opt_ms step_ms step_ms_min step_ms_max tokens_per_s peak_rss_bytes arena_peak_bytes flops gflops; do
  ok $([ "$(q "$tmp/tr.db" "SELECT count(*) FROM metrics m JOIN trials t ON t.id=m.trial_id WHERE t.lr < 1 AND m.name='$m' AND m.step IS NULL")" = 1 ]; echo $?) "train trial has summary metric $m"
done
"$RB" run "$Y/good_train.yaml" --db "$tmp/tr.db" --threads 1 --no-sgemm --quiet 2>/dev/null; rc=$?
ok $([ $rc = 1 ] && [ "$(q "$tmp/tr.db" "SELECT attempts FROM trials WHERE lr > 1")" = 2 ] && [ "$(q "$tmp/tr.db" "SELECT attempts FROM trials WHERE lr < 1")" = 1 ]; echo $?) "on resume the failed trial runs again, the done one does not"
tap_end
