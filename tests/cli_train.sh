#!/usr/bin/env bash
# cli_train.sh: `routebench train`'s contract for input it cannot use and for
# resuming: problems found before the first step with exit 2 (a destination
# that cannot be written, a damaged checkpoint, a bad --config file with its
# line and column), --config read like an experiment file's parameters,
# --load taking the configuration from the checkpoint, Ctrl-C exiting 130,
# --bench N --json printing one object that a script can parse.
. "$(dirname "$0")/tap.bash"
rb_abs
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
small="--task copy --d-model 32 --layers 1 --heads 2 --seq 32 --batch 2 --eval-batches 1 --threads 1"

for dest in /nonexistent/dir/x.ckpt "$tmp"; do
  "$RB" train $small --steps 2000 --save "$dest" >o 2>&1; rc=$?
  [ $rc = 2 ] && ! grep -q "^step" o && grep -q "$dest" o
  ok $? "--save $dest: exit 2 before the first step (rc $rc: $(head -c 100 o))"
done

echo "not a checkpoint" >bad.ckpt
"$RB" train --load bad.ckpt >o 2>&1; rc=$?
[ $rc = 2 ] && grep -q "bad.ckpt" o; ok $? "--load of a damaged checkpoint: exit 2 (rc $rc)"

printf 'task: copy\nd_model: 32\nlayers: 1\nheads: 2\nseq: 32\nbatch: 2\neval_batches: 1\nsteps: 3\nsave: a.ckpt\n' >c.yaml
"$RB" train --config c.yaml --threads 1 >o 2>&1; rc=$?
[ $rc = 0 ] && [ -s a.ckpt ] && grep -q "d_model 32, layers 1" o; ok $? "--config FILE trains with the file's parameters (rc $rc)"
printf 'params:\n  task: copy\n  d_model: 32\n  layres: 1\n  lr: .inf\n  heads: [2]\n' >bad.yaml
"$RB" train --config bad.yaml >o 2>&1; rc=$?
[ $rc = 2 ] && grep -q "bad.yaml:4:3: layres: unknown parameter (did you mean 'layers'?)" o &&
  grep -q "bad.yaml:5:7: lr: expected a number, got '.inf'" o && grep -q "bad.yaml:6:10: heads: expected a single value" o
ok $? "a bad --config file: every problem at its line:col, exit 2 (rc $rc: $(head -c 300 o | tr '\n' ' '))"
"$RB" train --config c.yaml --steps 4 --save b.ckpt --threads 1 >o 2>&1; rc=$?
[ $rc = 0 ] && grep -q "steps: 4, final" o && [ -s b.ckpt ]; ok $? "flags beside --config win (rc $rc)"

"$RB" train --load a.ckpt --steps 5 --threads 1 >o 2>&1; rc=$?
[ $rc = 0 ] && grep -q "resuming a.ckpt with its configuration; changed: steps 3 -> 5" o && grep -q "d_model 32, layers 1" o
ok $? "--load without the original flags takes the checkpoint's configuration and says what changed (rc $rc)"
"$RB" train --load a.ckpt --d-model 64 --threads 1 >o 2>&1; rc=$?
[ $rc != 0 ] && grep -qi "configuration" o; ok $? "--load with a flag that changes the model is refused (rc $rc)"

"$RB" train $small --steps 100000 --log-every 1 >o 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q "^step 2/" o && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
[ $rc = 130 ] && grep -q "stopped by Ctrl-C" o; ok $? "Ctrl-C stops training after the step in flight, exit 130 (rc $rc)"

# --bench N --json: one JSON object whose numbers hang together (parsed by perl's JSON::PP)
"$RB" train --task random --random-vocab 64 --d-model 32 --layers 2 --heads 2 --seq 64 --batch 2 --threads 1 \
  --backend local --window 16 --bench 3 --min-time 0 --json >j.json 2>o; rc=$?
perl -MJSON::PP -e '
  local $/; open my $f, "<", $ARGV[0] or die; my $t = <$f>;
  my $j = decode_json($t);
  for my $k (qw(step_ms step_ms_iqr fwd_ms bwd_ms opt_ms gflop_per_step gflops peak_rss_bytes
                arena_bytes arena_bytes_per_token_layer saved_act_bytes)) {
    die "missing $k\n" unless defined $j->{$k} }
  die "steps_timed $j->{steps_timed}\n" unless $j->{steps_timed} == 3;
  die "step_ms\n" unless $j->{step_ms} > 0 && $j->{step_ms_iqr} >= 0;
  die "min/max\n" unless $j->{step_ms_min} <= $j->{step_ms} && $j->{step_ms} <= $j->{step_ms_max};
  die "parts\n" unless $j->{fwd_ms} > 0 && $j->{bwd_ms} > 0 && $j->{opt_ms} >= 0;
  # the analytic count: 6 * (layers * 12 * d^2 + vocab * d) * tokens plus local attention fwd+bwd (12 d per pair)
  my $mat = 6 * (2 * 12 * 32 * 32 + 64 * 32) * 128;
  die "gflop_per_step $j->{gflop_per_step} below the matmuls alone\n" unless $j->{gflop_per_step} * 1e9 >= $mat;
  my $g = $j->{gflop_per_step} / ($j->{step_ms} / 1e3);
  die "gflops $j->{gflops} != $g\n" unless abs($j->{gflops} - $g) <= 1e-6 * $g;
  die "arena per token and layer\n" unless abs($j->{arena_bytes_per_token_layer} - $j->{arena_bytes} / 128 / 2) < 1e-6;
  die "saved > arena\n" unless $j->{saved_act_bytes} < $j->{arena_bytes};
  die "rss\n" unless $j->{peak_rss_bytes} > $j->{arena_bytes};
  die "backends\n" unless join(",", @{$j->{backends}}) eq "local,local";
' j.json 2>e
ok $(( rc != 0 || $? != 0 )) "train --bench 3 --json: one JSON object with consistent timings, flops and memory (rc $rc: $(head -c 300 e) $(head -c 200 j.json))"
[ "$(grep -c . j.json)" = 1 ]; ok $? "train --json prints exactly one line on stdout"
"$RB" train --task random --json --threads 1 >o 2>&1; rc=$?
[ $rc = 2 ] && grep -q -- "--json needs --bench" o; ok $? "train --json without --bench: exit 2 (rc $rc)"

"$RB" backends --help >/dev/null 2>&1; ok $? "backends --help exits 0"
tap_end
