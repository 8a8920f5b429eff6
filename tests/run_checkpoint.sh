#!/usr/bin/env bash
# run_checkpoint.sh: a training trial of a sweep survives its process. Run
# with a checkpoint every second, it is stopped by SIGTERM part-way (it saves
# and is recorded interrupted), rerun and killed with SIGKILL part-way (the
# last periodic checkpoint is all that is left), and rerun to the end; its
# stored loss curve is then step for step the one an uninterrupted run of the
# same trial records (same seed, same data order, exactly equal values at
# one thread), with every step once, and the checkpoint files are gone.
# The trial is sized to take about 10 s on an idle machine (at 1 thread), so
# that the checkpoints of one second come several times within each run.
. "$(dirname "$0")/tap.bash"
tmp=$(mktemp -d); pid=""
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
command -v sqlite3 >/dev/null || { echo "1..0 # SKIP sqlite3 not installed"; exit 0; }
cat >"$tmp/t.yaml" <<'Y'
name: ckpt_test
kind: train
params: {task: copy, copy_vocab: 8, d_model: 64, layers: 2, heads: 2, seq: 128, batch: 8, steps: 1000, lr: 3e-3,
         eval_every: 250, eval_batches: 2, window: 16, backend: routing, clusters: 8}
Y
q() { sqlite3 -cmd ".timeout 5000" "$1" "$2"; }
curve() { q "$1" "SELECT m.step || ' ' || printf('%.9g', m.value) FROM metrics m JOIN trials t ON t.id = m.trial_id WHERE m.name = '$2' AND m.step >= 0 ORDER BY m.step"; }
run() { "$RB" run "$tmp/t.yaml" --db "$1" --threads 1 --no-sgemm --checkpoint-every 1s 2>>"$tmp/log" & pid=$!; }
# wait until the checkpoint exists and has been rewritten at least once more
wait_ckpt() {
  ck="$tmp/$1.ckpt"; first=""
  for i in $(seq 1 600); do
    f=$(ls "$ck"/*.ckpt 2>/dev/null | head -1)
    if [ -n "$f" ]; then m=$(stat -c %Y.%s "$f"); [ -z "$first" ] && first=$m; [ "$m" != "$first" ] && return 0; fi
    kill -0 $pid 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

"$RB" run "$tmp/t.yaml" --db "$tmp/ref.db" --threads 1 --no-sgemm --checkpoint-every 0 2>/dev/null
ok $? "the uninterrupted reference run"

run "$tmp/c.db"; wait_ckpt c.db; ok $? "a checkpoint appears beside the database and is renewed"
kill -TERM $pid; wait $pid; rc=$?; pid=""
ok $([ $rc = 130 ]; echo $?) "SIGTERM ends the run with 130 (got $rc)"
st=$(q "$tmp/c.db" "SELECT status FROM trials")
ok $([ "$st" = interrupted ]; echo $?) "the trial is recorded interrupted (got $st)"
ls "$tmp/c.db.ckpt"/*.ckpt >/dev/null 2>&1; ok $? "its checkpoint is kept"
s1=$(q "$tmp/c.db" "SELECT count(*) FROM metrics")

run "$tmp/c.db"; wait_ckpt c.db; r=$?
kill -9 $pid; wait $pid 2>/dev/null; pid=""
ok $r "the rerun resumed and checkpointed again before SIGKILL"
grep -q "resumes from its checkpoint at step [1-9]" "$tmp/log"; ok $? "the rerun says it resumes from the checkpoint: $(grep -m1 "resumes from" "$tmp/log")"

"$RB" run "$tmp/t.yaml" --db "$tmp/c.db" --threads 1 --no-sgemm --checkpoint-every 1s 2>>"$tmp/log"
ok $? "the third run finishes the trial"
ok $([ "$(q "$tmp/c.db" "SELECT status FROM trials")" = done ]; echo $?) "the trial is done"
curve "$tmp/ref.db" train_loss >"$tmp/ref.loss"; curve "$tmp/c.db" train_loss >"$tmp/c.loss"
ok $([ "$(wc -l <"$tmp/ref.loss")" = 1000 ]; echo $?) "the reference has 1000 steps of train_loss"
cmp -s "$tmp/ref.loss" "$tmp/c.loss"; ok $? "the resumed trial's loss curve equals the uninterrupted one step for step ($(diff "$tmp/ref.loss" "$tmp/c.loss" | head -2 | tr '\n' ' '))"
curve "$tmp/ref.db" eval_loss >"$tmp/ref.eval"; curve "$tmp/c.db" eval_loss >"$tmp/c.eval"
cmp -s "$tmp/ref.eval" "$tmp/c.eval"; ok $? "and so do its evaluations ($(wc -l <"$tmp/c.eval") points)"
ok $([ -z "$(ls -A "$tmp/c.db.ckpt" 2>/dev/null)" ]; echo $?) "the done trial's checkpoint and sidecar are removed"
tap_end
