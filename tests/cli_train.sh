#!/usr/bin/env bash
# cli_train.sh: `routebench train`'s contract for input it cannot use and for
# resuming: problems found before the first step with exit 2 (a destination
# that cannot be written, a damaged checkpoint, a bad --config file with its
# line and column), --config read like an experiment file's parameters,
# --load taking the configuration from the checkpoint, Ctrl-C exiting 130.
set -u
RB=${RB:-build/routebench}
RB=$(cd "$(dirname "$RB")" && pwd)/$(basename "$RB")
n=0; fail=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi; }
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

"$RB" backends --help >/dev/null 2>&1; ok $? "backends --help exits 0"
echo "1..$n"
exit $fail
