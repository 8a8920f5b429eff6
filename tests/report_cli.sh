#!/usr/bin/env bash
# report_cli.sh: report, plot and compare end to end on databases written by
# `routebench run` itself: a tiny attention sweep (dense, local, routing over
# lengths, windows and clusters, two seeds) and a tiny training sweep (copy
# task, evaluation every few steps). Checks: every figure is a PNG (by its
# signature) and an SVG with its .gp and .dat beside it (figures without
# data skipped and listed), --dumb draws in the terminal, every table format prints one row per configuration, CSV rows
# have the header's field count, compare exits 0 on the same database and 1
# after a step time is made 50% slower in a copy (sqlite3), bad input exits 2.
. "$(dirname "$0")/tap.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

png_sig() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }

cat >"$tmp/attn.yaml" <<'EOF'
name: report-attn
kind: bench
bench: attn
repeat: 2
timing: {runs: 2, warmup: 1}
params: {heads: 1, head_dim: 16}
sweep:
  backend: [dense, local, routing]
  seq: [64, 128, 256]
  window: [16, 32]
  clusters: [2, 4]
EOF
cat >"$tmp/train.yaml" <<'EOF'
name: report-train
kind: train
params: {d_model: 16, layers: 1, heads: 2, batch: 2, steps: 12, eval_every: 4, eval_batches: 1, task: copy, copy_vocab: 8}
sweep:
  backend: [dense, local, routing]
  seq: [32, 64]
  window: [8, 16]
  clusters: [2, 4]
EOF

$RB run "$tmp/attn.yaml" --db "$tmp/attn.db" --threads 1 --no-sgemm --quiet >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ] || [ $rc = 1 ]; ok $? "routebench run wrote the attention sweep (exit $rc)"
$RB run "$tmp/train.yaml" --db "$tmp/train.db" --threads 1 --no-sgemm --quiet >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ] || [ $rc = 1 ]; ok $? "routebench run wrote the training sweep (exit $rc; failed trials are allowed and shown)"
nconf_attn=$(sqlite3 "$tmp/attn.db" "SELECT count(DISTINCT key) FROM trials")
nconf_train=$(sqlite3 "$tmp/train.db" "SELECT count(DISTINCT key) FROM trials")

for db in attn train; do
  $RB plot "$tmp/$db.db" --out "$tmp/png-$db" >"$tmp/o" 2>&1; rc=$?
  ok $rc "plot $db: gnuplot exits 0 for every figure ($(tail -n 1 "$tmp/o"))"
  figs="scaling memory curves_step curves_time heatmap tradeoff crossover"
  # an attention bench has no training curves nor losses: those figures are skipped and listed
  [ $db = attn ] && figs="scaling memory heatmap crossover"
  for f in $figs; do
    png_sig "$tmp/png-$db/$f.png" && [ -s "$tmp/png-$db/$f.gp" ]; ok $? "$db: $f.png is a PNG, $f.gp beside it"
  done
done
$RB plot "$tmp/attn.db" --out "$tmp/png-attn" >"$tmp/o" 2>&1
grep -q "^skipped 3 figures without data" "$tmp/o" && grep -q "^curves_step: no evaluation curves" "$tmp/o" &&
  grep -q "^tradeoff: " "$tmp/o" && [ ! -e "$tmp/png-attn/curves_step.png" ]
ok $? "plot attn without --only lists the 3 figures without data and does not draw them"
# SVG once, on the database where every figure has data (test_report covers SVG on another)
$RB plot "$tmp/train.db" --out "$tmp/svg-train" --format svg --quiet >"$tmp/o" 2>&1; rc=$?
ok $rc "plot train --format svg"
for f in scaling memory curves_step curves_time heatmap tradeoff crossover; do
  [ -s "$tmp/svg-train/$f.svg" ] && grep -q "<svg" "$tmp/svg-train/$f.svg"; ok $? "train: $f.svg is an SVG"
done
# the data the figures need: scaling lines with an exponent, training curves
grep -q '~n^' "$tmp/png-attn/scaling.gp"; ok $? "attn scaling legend carries fitted exponents"
grep -Eq '^[0-9]+	' "$tmp/png-train/curves.dat"; ok $? "train curves.dat holds evaluation points"
# the trade-off figure keys its point sizes: the largest keyed memory is the
# largest memory among its points (tradeoff.dat's column 4, MiB), and the
# keyed sizes grow with the keyed memory
maxmem=$(awk -F'\t' '/^[0-9]/ && $4 != "nan" && $4+0 > m {m = $4+0} END {printf "%.4g", m}' "$tmp/png-train/tradeoff.dat")
grep -o "keyentry with points pt 6 ps [0-9.]* lc rgb 'gray40' title 'memory [0-9.e+]* MiB'" "$tmp/png-train/tradeoff.gp" |
    awk '{print $7, $13}' >"$tmp/keys"
top=$(awk 'NR==1 {print $2}' "$tmp/keys")
[ "$(wc -l <"$tmp/keys")" = 3 ] && [ "$top" = "$maxmem" ] && sort -g -k1,1 "$tmp/keys" | sort -g -c -k2,2
ok $? "train tradeoff.gp keys its point sizes: 3 sizes, the largest at the largest memory ($top = $maxmem MiB)"
# extrapolation: dense over its time limit at the longest length (its trial
# failed, no metrics) gets its fit carried on, dotted and keyed as not
# measured, up to that length; the value written for it is the fit's own
# (recomputed here from the "# fit" line); local, measured everywhere, gets none
cat >"$tmp/ext.yaml" <<'EOF'
name: report-ext
kind: bench
bench: attn
timing: {runs: 1, warmup: 0}
params: {heads: 1, head_dim: 8, window: 8}
sweep:
  backend: [dense, local]
  seq: [32, 64, 128, 256]
EOF
$RB run "$tmp/ext.yaml" --db "$tmp/ext.db" --threads 1 --no-sgemm --quiet >"$tmp/o" 2>&1
sqlite3 "$tmp/ext.db" "DELETE FROM metrics WHERE trial_id IN (SELECT id FROM trials WHERE backend = 'dense' AND seq = 256);
                       UPDATE trials SET status = 'failed', error = 'over the time limit' WHERE backend = 'dense' AND seq = 256"
$RB plot "$tmp/ext.db" --out "$tmp/ext" --only scaling --quiet >"$tmp/o" 2>&1; rc=$?
fit=$(grep '^# fit dense:' "$tmp/ext/scaling.dat" | sed 's/.*exponent \([^ ]*\) coefficient \([^ ]*\) .*/\1 \2/')
want=$(echo "$fit" | awk '{printf "%.4g", $2 * 256 ^ $1}')
got=$(grep '^# extrapolated dense:' "$tmp/ext/scaling.dat" | sed 's/.*(\([^ ]*\) at n=256).*/\1/' | awk '{printf "%.4g", $1}')
[ $rc = 0 ] && grep -q "^e0(x) = (x >= 128 && x <= 256) ? c0 \* x\*\*k0 : 1/0" "$tmp/ext/scaling.gp" &&
    grep -q "e0(x) with lines lc 1 dt 3 lw 2 title 'dense: fit extrapolated, not measured (n=128-256)'" \
        "$tmp/ext/scaling.gp" && [ -n "$want" ] && [ "$got" = "$want" ] && ! grep -q '^e1(x)' "$tmp/ext/scaling.gp" &&
    [ -s "$tmp/ext/scaling.png" ]
ok $? "scaling: dense's fit extrapolated dotted to n=256 where it failed ($got = $want), local not (rc $rc)"
# a user reruns an edited script
( cd "$tmp/png-attn" && sed -i 's/^set grid.*/set grid/' scaling.gp && rm -f scaling.png && gnuplot scaling.gp ) >"$tmp/o" 2>&1
png_sig "$tmp/png-attn/scaling.png"; ok $? "an edited scaling.gp reruns with gnuplot in its directory"

$RB plot "$tmp/attn.db" --out "$tmp/dumb" --dumb --only scaling >"$tmp/d" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "sequence length" "$tmp/d" && [ "$(wc -l <"$tmp/d")" -gt 20 ]; ok $? "--dumb draws in the terminal (exit $rc)"

# tables: one row per configuration in every format
for db in attn train; do
  n_conf=$([ $db = attn ] && echo "$nconf_attn" || echo "$nconf_train")
  $RB report "$tmp/$db.db" >"$tmp/md" 2>&1; rc=$?
  rows=$(grep -c '^| ' "$tmp/md")
  [ $rc = 0 ] && [ "$rows" = $((n_conf + 1)) ]; ok $? "report $db md: $rows table lines = header + $n_conf configurations"
  $RB report "$tmp/$db.db" --format csv >"$tmp/csv" 2>&1; rc=$?
  lines=$(wc -l <"$tmp/csv")
  fields=$(awk -F, 'NR==1{n=NF} NR>1 && $0 !~ /"/ && NF!=n{bad=1} END{print bad+0}' "$tmp/csv")
  [ $rc = 0 ] && [ "$lines" = $((n_conf + 1)) ] && [ "$fields" = 0 ]; ok $? "report $db csv: $lines lines, every unquoted row has the header's fields"
  $RB report "$tmp/$db.db" --format tex >"$tmp/tex" 2>&1; rc=$?
  body=$(sed -n '/\\midrule/,/\\bottomrule/p' "$tmp/tex" | grep -c '\\\\$')
  [ $rc = 0 ] && [ "$body" = "$n_conf" ] && grep -q toprule "$tmp/tex"; ok $? "report $db tex: $body body rows"
done
$RB report "$tmp/attn.db" --by backend --metric time,fwd_ms >"$tmp/md" 2>&1; rc=$?
[ $rc = 0 ] && [ "$(grep -c '^| ' "$tmp/md")" = 4 ]; ok $? "report --by backend: one row per backend"
$RB report "$tmp/attn.db" --where "backend = 'dense'" --format csv >"$tmp/csv" 2>&1; rc=$?
[ $rc = 0 ] && [ "$(wc -l <"$tmp/csv")" = 4 ]; ok $? "report --where: only dense (3 lengths)"

# compare: the same database passes, an injected regression fails. The
# machine may be loaded while the sweep ran (its trials then marked noisy,
# never judged), so the regression is injected into a copy judged clean.
$RB compare "$tmp/attn.db" --baseline "$tmp/attn.db" >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ]; ok $? "compare against itself exits 0 (got $rc)"
cp "$tmp/attn.db" "$tmp/base.db"
sqlite3 "$tmp/base.db" "UPDATE trials SET noisy = 0, noise = NULL"
cp "$tmp/base.db" "$tmp/slow.db"
sqlite3 "$tmp/slow.db" "UPDATE metrics SET value = value * 1.5 + 1 WHERE name = 'fwdbwd_ms' AND step IS NULL
  AND trial_id IN (SELECT id FROM trials WHERE name = 'local-n128-w16')"
$RB compare "$tmp/slow.db" --baseline "$tmp/base.db" >"$tmp/o" 2>&1; rc=$?
[ $rc = 1 ] && grep -q SLOWER "$tmp/o"; ok $? "compare exits 1 on an injected 50% slowdown (got $rc)"
$RB compare "$tmp/slow.db" --baseline "$tmp/base.db" --time-abs 2 >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ]; ok $? "compare exits 0 when the absolute tolerance covers it (got $rc)"
sqlite3 "$tmp/slow.db" "UPDATE trials SET noisy = 1, noise = 'test: marked noisy' WHERE name = 'local-n128-w16'"
$RB compare "$tmp/slow.db" --baseline "$tmp/base.db" >"$tmp/o" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "time noisy (not judged)" "$tmp/o" && ! grep -q SLOWER "$tmp/o"
ok $? "the same slowdown measured noisy is reported as noisy, not as a regression (got $rc)"

# bad input: exit 2 with a message
for args in "report" "report $tmp/nope.db" "report $tmp/attn.db --format xls" "report $tmp/attn.db --metric bogus" \
            "plot $tmp/attn.db --format gif" "plot $tmp/attn.db --only bogus" "compare $tmp/attn.db" \
            "report $tmp/attn.yaml"; do
  $RB $args >"$tmp/o" 2>&1; rc=$?
  [ $rc = 2 ] && [ -s "$tmp/o" ]; ok $? "'${args#"$tmp/"}' exits 2 with a message (got $rc)"
done
RB_GNUPLOT=/nonexistent/gnuplot $RB plot "$tmp/attn.db" --out "$tmp/x" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q gnuplot "$tmp/o"; ok $? "a missing gnuplot is reported (exit $rc)"

tap_end
