#!/usr/bin/env bash
# paper_configs.sh: the authors' configurations are expressible (issue 17).
# attn --check and --save for hybrid heads with their own windows; train
# --dry-run builds each of the authors' full-size models (its parameter count
# against the count worked out here from the shapes, the head groups of each
# layer); every experiments/paper_*_like.yaml dry-runs and trains 3 steps, and
# its hybrid trials store the unrouted share of each routing layer.
. "$(dirname "$0")/tap.bash"
rb_abs
X=$TOP/experiments
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# --- one layer: local heads with their own block beside routing heads ---
$RB attn --check --json --backend hybrid --seq 64 --heads 4 --head-dim 8 --clusters 4 --local-window 8 >"$tmp/c" 2>&1
grep -Eq '"pass": ?true' "$tmp/c"; ok $? "attn --check hybrid, local block 8 beside 4 clusters x 16: $(grep -o '"grad_rel_err":[^,]*' "$tmp/c")"
$RB attn --check --json --backend hybrid --seq 64 --heads 4 --head-dim 8 --local-heads 4 --window 4 --local-window 64 >"$tmp/c" 2>&1
grep -Eq '"pass": ?true' "$tmp/c" && grep -Eq '"dense_max_abs_err": ?[0-9]' "$tmp/c"
ok $? "attn --check: all heads local with local_window >= seq is compared with dense (window 4 notwithstanding)"
$RB attn --backend hybrid --seq 64 --heads 4 --head-dim 8 --clusters 4 --local-window 8 --save "$tmp/s" >/dev/null 2>&1
ok $? "attn --save hybrid with local_window"
if command -v python3 >/dev/null; then
  python3 - "$tmp/s/manifest.json" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))["head_groups"]
assert [x["backend"] for x in g] == ["local", "routing"], g
assert (g[0]["first_head"], g[0]["heads"], g[0]["params"]["window"]) == (0, 2, 8), g[0]
assert (g[1]["first_head"], g[1]["heads"], g[1]["params"]["window"], g[1]["params"]["clusters"]) == (2, 2, 16, 4), g[1]
EOF
  ok $? "the manifest says heads 0-1 are local (window 8), heads 2-3 routing (4 clusters x 16)"
else
  echo "ok $((n+=1)) # SKIP no python3"
fi

# a model's export manifest names each layer's head groups
$RB train --task random --backend hybrid --local-layers 1 --layers 2 --heads 4 --d-model 32 --seq 64 --clusters 4 \
  --local-window 8 --steps 1 --batch 1 --eval-batches 1 --save "$tmp/m.ckpt" >"$tmp/o" 2>&1 &&
  $RB export "$tmp/m.ckpt" "$tmp/ex" >>"$tmp/o" 2>&1
ok $? "train --save and export a hybrid model with local_window"
grep -q '"local heads 0-3 (window 8)"' "$tmp/ex/manifest.json" &&
  grep -q '"local heads 0-1 (window 8), routing heads 2-3 (clusters 4, window 16)"' "$tmp/ex/manifest.json"
ok $? "export's manifest: layer 0 all local (block 8), layer 1 local 0-1 (block 8) and routing 2-3 (4 x 16)"

# --- the authors' full-size models, built on paper (--dry-run) ---
# parameters of routebench's model: V*C + L*(4C^2 + 2CF + 9C + F) + 2C (no learned positions with rotary)
count() { local L=$1 C=$2 F=$3 V=$4; echo $(( V*C + L*(4*C*C + 2*C*F + 9*C + F) + 2*C )); }
full() { # name, expected count, the layer lines expected, flags...
  local name=$1 want=$2 lines=$3; shift 3
  $RB train --dry-run "$@" >"$tmp/d" 2>&1; rc=$?
  got=$(grep -o '[0-9]* parameters' "$tmp/d" | grep -o '^[0-9]*')
  [ $rc = 0 ] && [ "$got" = "$want" ]; ok $? "$name at full size: $got parameters (shapes give $want)"
  [ "$(grep -c '^  layer' "$tmp/d")" = "$lines" ]; ok $? "$name: $(grep '^  layer' "$tmp/d" | tr '\n' ';')"
}
full enwik8_local_cluster8k "$(count 12 1024 4096 256)" 1 --backend hybrid --layers 12 --heads 8 --local-heads 4 \
  --d-model 1024 --mlp-mult 4 --seq 8192 --clusters 16 --window 512 --local-window 256 --pos rotary --batch 1
grep -q "layers 0-11: local heads 0-3 (window 256), routing heads 4-7 (clusters 16, window 512)" "$tmp/d"
ok $? "enwik8: every layer 4 local heads of 256 and 4 routing heads of 16 x 512"
full wikitext103_local_cluster4k "$(count 14 1024 4096 267735)" 1 --backend hybrid --layers 14 --heads 16 \
  --local-heads 8 --d-model 1024 --mlp-mult 4 --seq 4096 --clusters 8 --window 512 --local-window 256 \
  --vocab 267735 --pos rotary --batch 1
full wikitext103_local_cluster1k "$(count 20 1024 4096 267735)" 1 --backend hybrid --layers 20 --heads 16 \
  --local-heads 8 --d-model 1024 --mlp-mult 4 --seq 1024 --clusters 2 --window 512 --local-window 256 \
  --vocab 267735 --pos rotary --batch 1
full pg19_local_cluster8k "$(count 22 1032 4128 32768)" 2 --backend hybrid --local-layers 21 --layers 22 --heads 8 \
  --local-heads 6 --d-model 1032 --mlp-mult 4 --seq 8192 --clusters 16 --window 512 --local-window 256 \
  --vocab 32768 --pos rotary --batch 1
grep -q "layers 0-20: local heads 0-7 (window 256)" "$tmp/d" &&
  grep -q "layer 21: local heads 0-5 (window 256), routing heads 6-7 (clusters 16, window 512)" "$tmp/d"
ok $? "pg19: 21 local layers of block 256 (sparsity_skip_first), then 6 local + 2 routing heads"

# --- the presets: dry run, 3 steps, unrouted share per layer ---
mkdir -p "$tmp/w/data" && head -c 200000 "$(dirname "$0")/../data/kjv.txt" >"$tmp/w/data/kjv.txt" 2>/dev/null ||
  yes 'In the beginning God created the heaven and the earth.' | head -c 200000 >"$tmp/w/data/kjv.txt"
cd "$tmp/w" || exit 1
for f in "$X"/paper_*_like.yaml; do
  b=$(basename "$f" .yaml)
  $RB run "$f" --dry-run --db "$tmp/$b.db" >"$tmp/o" 2>&1; ok $? "$b: --dry-run"
  $RB run "$f" --set steps=3 --set eval_batches=1 --set batch=1 --db "$tmp/$b.db" >"$tmp/o" 2>&1; rc=$?
  ok $rc "$b: every trial trains 3 steps ($(tail -1 "$tmp/o"))"
  nd=$(sqlite3 "$tmp/$b.db" "SELECT count(*) FROM trials WHERE status='done'")
  nt=$(sqlite3 "$tmp/$b.db" "SELECT count(*) FROM trials")
  [ "$nd" = "$nt" ] && [ "$nt" -ge 2 ]; ok $? "$b: $nd of $nt trials done"
  # routing layers of the hybrid trials: pg19 routes only in its last layer
  nl=$(sqlite3 "$tmp/$b.db" "SELECT count(DISTINCT name) FROM metrics WHERE name LIKE 'attn.unrouted_share.L%'")
  want=4; [ "$b" = paper_pg19_like ] && want=1; [ "$b" = paper_wikitext_like ] && want=5
  [ "$nl" = "$want" ]; ok $? "$b: unrouted share stored for each routing layer ($nl layers, want $want)"
  v=$(sqlite3 "$tmp/$b.db" "SELECT min(value) > 0 AND max(value) < 1 FROM metrics WHERE name LIKE 'attn.unrouted_share.L%'")
  [ "$v" = 1 ]; ok $? "$b: the shares are between 0 and 1"
done
tap_end
