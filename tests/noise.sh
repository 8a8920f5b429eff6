#!/usr/bin/env bash
# noise.sh: a measurement taken while another process keeps a core busy is
# marked noisy, says why, and a sweep beside it says so in its output and its
# database; the same measurement with nothing beside it is not. The busy
# loop is a child of this test on the same two cores as the 2-thread
# measurement. The idle half allows retries (CI machines are shared) and is
# skipped when the machine is loaded by others before it starts.
. "$(dirname "$0")/tap.bash"
skip() { n=$((n+1)); echo "ok $n # SKIP $1"; }
tmp=$(mktemp -d); busy=""
trap '[ -n "$busy" ] && kill $busy 2>/dev/null; rm -rf "$tmp"' EXIT
command -v sqlite3 >/dev/null || { echo "1..0 # SKIP sqlite3 not installed"; exit 0; }
cores=$(nproc)
attn() { "$RB" attn --backend dense --seq 512 --heads 2 --threads "$cores" --min-time 0.5 --max-time 1 --json "$@"; }
noisy_of() { sed -n 's/.*"noisy":\(true\|false\).*/\1/p' "$1"; }
# others' CPU (cores' worth) over a second, from /proc/stat, before we load anything
others() {
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat); sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat)
  echo $(( (b - a) ))   # jiffies in one second: 100 = one core
}

# one busy loop per core the measurement uses, pinned to the same cores
start_busy() { busy=""; for i in $(seq 1 "$cores"); do taskset -c 0-$((cores - 1)) perl -e '1 while 1' & busy="$busy $!"; done; sleep 0.3; }
stop_busy() { kill $busy 2>/dev/null; wait $busy 2>/dev/null; busy=""; }

start_busy
attn >"$tmp/busy.json" 2>"$tmp/busy.err"
ok $([ "$(noisy_of "$tmp/busy.json")" = true ]; echo $?) "beside a busy loop: \"noisy\": true in --json"
grep -q '"noise":"[^"]*other processes used' "$tmp/busy.json"; ok $? "the reason names the other processes: $(sed -n 's/.*"noise":"\([^"]*\)".*/\1/p' "$tmp/busy.json")"
grep -q "warning: noisy measurement" "$tmp/busy.err"; ok $? "and a one-line warning on stderr"

cat >"$tmp/s.yaml" <<'Y'
name: noise_test
timing: {runs: 3, min_time: 0.3, max_time: 1}
params: {heads: 2, head_dim: 32}
sweep:
  backend: [dense, local]
  seq: [256, 512]
Y
"$RB" run "$tmp/s.yaml" --db "$tmp/s.db" --threads "$cores" --no-sgemm 2>"$tmp/run.err"
# a whole-model bench trial beside it too (bench: model trials kept no spread
# and no noise judgement: a step twice as slow was stored without a word)
cat >"$tmp/m.yaml" <<'Y'
name: noise_model
kind: bench
bench: model
timing: {runs: 5, warmup: 1}
params: {backend: local, seq: 256, heads: 2, window: 64, d_model: 64, layers: 1, task: random, random_vocab: 64}
Y
"$RB" run "$tmp/m.yaml" --db "$tmp/m.db" --threads "$cores" --no-sgemm 2>"$tmp/m.err"
stop_busy
nn=$(sqlite3 "$tmp/s.db" "SELECT count(*) FROM trials WHERE noisy = 1 AND noise LIKE '%other processes%'")
ok $([ "$nn" -ge 3 ]; echo $?) "a sweep beside the busy loop marks its trials noisy in the database ($nn of 4)"
grep -q "is a noisy measurement" "$tmp/run.err" && grep -q "[1-9][0-9]* noisy; results" "$tmp/run.err"
ok $? "and says so per trial and in its summary: $(tail -1 "$tmp/run.err")"
# (its steps are a few milliseconds: the trial times steps until min_time,
# 0.25 s, so the other processes are seen in /proc/stat, not guessed from
# the spread; five steps alone were too short to tell, and CI once stored
# the trial clean)
mm=$(sqlite3 "$tmp/m.db" "SELECT (SELECT noisy FROM trials WHERE noise LIKE '%other processes used%') || ' ' || count(*) FROM metrics WHERE name IN ('step_ms_iqr', 'load_avg', 'other_cpu', 'noisy') AND step IS NULL AND value IS NOT NULL")
ok $([ "$mm" = "1 4" ]; echo $?) "a bench: model trial beside it keeps its spread and load and is marked noisy (noisy, metrics: $mm)"
# --redo-noisy measures those trials again (and only those), whatever the
# machine is like now: each noisy trial is attempted a second time
before=$(sqlite3 "$tmp/s.db" "SELECT group_concat(id || ':' || noisy, ' ') FROM trials ORDER BY id")
nall=$(sqlite3 "$tmp/s.db" "SELECT count(*) FROM trials WHERE noisy = 1")
"$RB" run "$tmp/s.yaml" --db "$tmp/s.db" --threads "$cores" --no-sgemm --redo-noisy 2>"$tmp/redo.err"; rc=$?
bad=$(sqlite3 "$tmp/s.db" "SELECT count(*) FROM trials WHERE status != 'done' OR attempts != 1 + (instr(' $before ', ' ' || id || ':1 ') > 0)")
ok $([ $rc = 0 ] && [ "$bad" = 0 ] && grep -q -- "--redo-noisy: $nall noisy trial" "$tmp/redo.err"; echo $?) \
   "--redo-noisy measures the $nall noisy trials again and leaves the others ($bad wrong; $(head -1 "$tmp/redo.err"))"

# idle: allow three tries; skip when others already load the machine
o=$(others)
if [ "$o" -gt 30 ]; then
  skip "the machine is loaded by other processes ($o% of a core): cannot show a clean measurement"
else
  clean=1
  for try in 1 2 3; do
    attn >"$tmp/idle.json" 2>/dev/null
    [ "$(noisy_of "$tmp/idle.json")" = false ] && { clean=0; break; }
    sleep 2
  done
  ok $clean "with nothing beside it the same measurement is not noisy (try $try: $(sed -n 's/.*"noise":"\([^"]*\)".*/\1/p' "$tmp/idle.json"))"
fi
tap_end
