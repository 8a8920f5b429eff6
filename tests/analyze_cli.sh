#!/usr/bin/env bash
# analyze_cli.sh: `routebench analyze` end to end: a tiny hybrid model
# trained on the copy task and saved, analysed from the checkpoint with --db;
# checks: the JSD table and kept-mass table are printed, the database holds
# one done trial of kind analyze whose metrics include the per-head, per-layer
# and overall names and whose JSD values lie in [0, ln 2] and kept masses in
# [0, 1]; a rerun replaces the trial instead of adding one; other
# configuration flags, a missing checkpoint, a bad --split and a database of
# another experiment exit 2. The checkpoint holds its configuration: analyze
# and export from the checkpoint alone give what they give with the training
# flags, and a flag on top (--batch) replaces one key.
. "$(dirname "$0")/tap.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if ! command -v sqlite3 >/dev/null; then echo "1..0 # SKIP sqlite3 not installed"; exit 0; fi

cfg=(--task copy --backend hybrid --d-model 32 --layers 2 --heads 4 --seq 32 --batch 2)
"$RB" train "${cfg[@]}" --steps 5 --save "$tmp/ck" >"$tmp/train.out" 2>&1
ok $? "train a tiny hybrid model and save it"

"$RB" analyze "$tmp/ck" "${cfg[@]}" --batches 2 --db "$tmp/a.db" >"$tmp/an.out" 2>&1
ok $? "analyze CHECKPOINT --db exits 0"
grep -q "local_local" "$tmp/an.out" && grep -q "local_routing" "$tmp/an.out" && grep -q "routing_routing" "$tmp/an.out"
ok $? "the JSD table names its three groups"
grep -q "Kept dense mass against the random floor" "$tmp/an.out"
ok $? "the kept-mass table is printed"

q() { sqlite3 "$tmp/a.db" "$1"; }
[ "$(q "select count(*) from trials where kind = 'analyze' and status = 'done'")" = 1 ]
ok $? "one done trial of kind analyze"
missing=0
for m in analyze.L0.H0.entropy analyze.L1.H3.kept_mass analyze.L1.H3.random_mass analyze.L0.kept_mass.local \
         analyze.L0.jsd.local_routing analyze.jsd.routing_routing analyze.kept_mass.routing \
         analyze.random_mass.routing analyze.L0.kmeans_objective analyze.L0.unrouted_share analyze.eval_loss; do
    [ "$(q "select count(*) from metrics where name = '$m' and step is null")" = 1 ] || { echo "# missing $m"; missing=1; }
done
ok $missing "per-head, per-layer, overall and backend-statistic metrics are in the database"
[ "$(q "select count(*) from metrics where name like 'analyze.%jsd.%' and name not like '%.std' and name not like '%.pairs' and (value < 0 or value > 0.6932)")" = 0 ] &&
[ "$(q "select count(*) from metrics where name like 'analyze.%jsd.%' and name not like '%.std' and name not like '%.pairs'")" -gt 0 ]
ok $? "every JSD lies in [0, ln 2]"
[ "$(q "select count(*) from metrics where (name like '%kept_mass%' or name like '%random_mass%') and (value < 0 or value > 1.000001)")" = 0 ]
ok $? "every kept / random mass lies in [0, 1]"

"$RB" analyze "$tmp/ck" "${cfg[@]}" --batches 2 --db "$tmp/a.db" >/dev/null 2>&1
[ $? = 0 ] && [ "$(q "select count(*) from trials")" = 1 ] && [ "$(q "select count(*) from experiments")" = 2 ]
ok $? "a rerun replaces its trial (one trial, two runs recorded)"

"$RB" analyze "$tmp/ck" --batches 2 >"$tmp/an_alone.out" 2>&1 &&
    cmp -s <(grep -v "^analyze \|wrote the measures\|^$" "$tmp/an.out") <(grep -v "^analyze \|^$" "$tmp/an_alone.out") &&
    grep -q "2 layers x 4 heads, 2 batches of 2 sequences of 32 tokens" "$tmp/an_alone.out"
ok $? "analyze from the checkpoint alone (no flags): the same tables as with the training flags"
"$RB" analyze "$tmp/ck" --batches 1 --batch 3 2>&1 | grep -q "1 batches of 3 sequences of 32 tokens"
ok $? "a flag on top of the checkpoint's configuration replaces its key (--batch 3)"
"$RB" export "$tmp/ck" "$tmp/x_alone" >/dev/null 2>&1 && "$RB" export "$tmp/ck" "$tmp/x_flags" "${cfg[@]}" >/dev/null 2>&1 &&
    [ -s "$tmp/x_alone/manifest.json" ] && diff -r "$tmp/x_alone" "$tmp/x_flags" >/dev/null
ok $? "export from the checkpoint alone writes what export with the training flags writes"
"$RB" analyze "$tmp/ck" --task copy --backend hybrid --d-model 64 --layers 2 --heads 4 --seq 32 >"$tmp/bad" 2>&1
[ $? = 2 ] && grep -q "configuration" "$tmp/bad"
ok $? "other configuration flags: exit 2, says why"
"$RB" analyze "$tmp/none" "${cfg[@]}" >/dev/null 2>&1
ok $([ $? = 2 ]; echo $?) "missing checkpoint: exit 2"
"$RB" analyze "$tmp/ck" "${cfg[@]}" --split train >/dev/null 2>&1
ok $([ $? = 2 ]; echo $?) "--split train refused (held-out data only)"
"$RB" analyze "$tmp/ck" "${cfg[@]}" --batches 1 --db "$tmp/a.db" --name other >"$tmp/bad" 2>&1
[ $? = 2 ] && grep -q "holds results of experiment" "$tmp/bad"
ok $? "a database of another experiment is refused"
"$RB" analyze --report "$tmp/a.db" >"$tmp/rep" 2>&1 && grep -q "| local-routing" "$tmp/rep" &&
    [ "$(grep -c '^| hybrid' "$tmp/rep")" = 3 ]
ok $? "--report DB: the JSD table, one row per layer plus all"
# 2 local + 2 routing heads: per layer one local-local pair (no spread: said
# n=1, not a std of 0), four local-routing pairs, one routing-routing pair
lr=$(q "select value from metrics where name = 'analyze.L0.jsd.local_routing.pairs'")
ll=$(q "select value from metrics where name = 'analyze.L0.jsd.local_local.pairs'")
sd=$(q "select count(*) from metrics where name = 'analyze.L0.jsd.local_local.std'")
row=$(grep '^| hybrid *| *0 ' "$tmp/rep")
[ "${lr%.0}" = 4 ] && [ "${ll%.0}" = 1 ] && [ "$sd" = 0 ] && echo "$row" | grep -q '(n=1)' && ! echo "$row" | grep -q '± 0.0000'
ok $? "one head pair: the pair count is stored and the table says n=1 instead of ± 0.0000 ($row)"
"$RB" analyze --report "$tmp/a.db" --format csv >"$tmp/rep.csv" 2>&1 &&
    lr=$(awk -F, '$2 == "all" {print $5}' "$tmp/rep.csv") &&
    want=$(sqlite3 "$tmp/a.db" "select value from metrics where name = 'analyze.jsd.local_routing'") &&
    awk -v a="$lr" -v b="$want" 'BEGIN { exit !(a - b < 1e-5 && b - a < 1e-5) }'
ok $? "--report csv: the all-layers local-routing cell is the stored metric ($lr)"
"$RB" report "$tmp/a.db" --jsd >"$tmp/rep2" 2>&1 && cmp -s "$tmp/rep" "$tmp/rep2"
ok $? "routebench report --jsd prints the same JSD table"
if command -v gnuplot >/dev/null; then
    "$RB" plot "$tmp/a.db" --out "$tmp/pl2" >/dev/null 2>&1 && [ -s "$tmp/pl2/kept_mass.png" ]
    ok $? "routebench plot draws the kept-mass figure for a database with analyze trials"
    "$RB" analyze --plot "$tmp/a.db" --out "$tmp/pl" >/dev/null 2>&1 && [ -s "$tmp/pl/kept_mass.png" ] &&
        [ -s "$tmp/pl/kept_mass.gp" ] && grep -q "hybrid routing heads" "$tmp/pl/kept_mass.dat"
    ok $? "--plot DB: kept_mass.png with its .gp and .dat"
else
    echo "ok $((n=n+1)) # SKIP gnuplot not installed"
fi
"$RB" analyze --report "$tmp/ck" >/dev/null 2>&1
ok $([ $? = 2 ]; echo $?) "--report on a file that is no database: exit 2"
cat >"$tmp/an.yaml" <<'YAML'
name: analyze-sweep
kind: analyze
params: {d_model: 32, layers: 1, heads: 4, batch: 2, steps: 3, eval_batches: 1, task: copy, seq: 32, backend: hybrid}
sweep:
  clusters: [2, 4]
YAML
"$RB" run "$tmp/an.yaml" --db "$tmp/s.db" >/dev/null 2>&1 &&
    [ "$(sqlite3 "$tmp/s.db" "select count(*) from trials where kind = 'analyze' and status = 'done'")" = 2 ] &&
    [ "$(sqlite3 "$tmp/s.db" "select count(distinct trial_id) from metrics where name = 'analyze.jsd.local_routing'")" = 2 ] &&
    [ "$(sqlite3 "$tmp/s.db" "select count(*) from metrics where name = 'eval_loss' and step is null")" = 2 ]
ok $? "kind: analyze sweep: each trial trains, then has its analyze.* metrics"
"$RB" analyze --report "$tmp/s.db" | grep -q "hybrid k=4"
ok $? "--report on the sweep: one configuration per cluster count"
"$RB" analyze --help | grep -q "O(seq^2) per head"
ok $? "--help states the cost"

tap_end
