#!/usr/bin/env bash
# make_seeds.sh: (re)make the seed corpora tests/fuzz/corpus/<target>/ and
# the dictionaries tests/fuzz/experiment.dict, flags.dict and npy.dict from
# what the project ships and what routebench writes:
#   experiment    experiments/*.yaml, tests/yaml/*.yaml, two with --set overrides
#   train_config  parameter: value files for `train --config`
#   npy           arrays written by `routebench attn --save` and `routebench export`
#   checkpoint    tiny checkpoints written by `routebench train --save` (dense,
#                 routing with centroids, hybrid over local layers, rotary)
#   manifest      manifest.json of `export` and of `attn --save`, a few JSON edge cases
#   flags         command lines: the README's examples and some by hand (a first
#                 byte 0 attn, 1 train, 2 run, then NUL-separated arguments)
# Every seed is small (the whole corpus stays well under 1 MB). Needs
# build/routebench (RB=path to use another); runs single-threaded in a few seconds.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
RB=${RB:-build/routebench}
[ -x "$RB" ] || { echo "make_seeds: $RB is missing: run make first" >&2; exit 2; }
F=tests/fuzz
C=$F/corpus
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
rm -rf "$C"
mkdir -p $C/experiment $C/train_config $C/npy $C/checkpoint $C/manifest $C/flags
T="--threads 1"

# ---- dictionaries ----
params=$(grep -oE '^(PARAM|ALIAS)\( *[a-z_0-9]+' core/util/params.def | sed -E 's/^(PARAM|ALIAS)\( *//' | sort -u)
backends=$("$RB" backends --names)
{
  echo "# tests/fuzz/experiment.dict: made by tests/fuzz/make_seeds.sh from core/util/params.def,"
  echo "# the experiment-file keys (core/harness/experiment.c) and \`routebench backends --names\`."
  for k in $params; do echo "\"$k\""; done
  for k in name description kind bench repeat seed timeout timing runs warmup min_time max_time \
           params sweep zip exclude only; do echo "\"$k\""; done
  for b in $backends; do echo "\"$b\""; done
  for v in bench train analyze attn model auto true false topk argmax l2 layernorm learned sinusoidal \
           rotary none text copy recall random 90s 5m 2h; do echo "\"$v\""; done
  # libFuzzer's dictionary escapes are \\, \" and \xAB only
  for s in ': ' '- ' '[' ']' '{' '}' ', ' '\x0a  ' '\x0a    ' '\"' "'" '#' '---' '~' 'null' '1e9' '-1' '0' '65536' \
           '16777216' '2147483648' 'sweep.' 'params.' 'timing.' '='; do printf '"%s"\n' "$s"; done
} >$F/experiment.dict
{
  echo "# tests/fuzz/flags.dict: made by tests/fuzz/make_seeds.sh: every parameter flag (params.def),"
  echo "# the commands' own flags (core/cli/*.c) and backend names."
  for k in $params; do echo "\"--${k//_/-}\""; echo "\"--no-${k//_/-}\""; done
  grep -ohE '\{"--[a-z-]+"' core/cli/*.c | sed 's/^{//' | sort -u
  for b in $backends; do echo "\"$b\""; done
  for s in '\x00' '\x00--' 'auto' 'true' 'false' '-h' '--help' '--' '-' '=' '5m' '90s' '1e308' 'nan' 'inf' '0x10' \
           '-1' '2147483648'; do printf '"%s"\n' "$s"; done
} >$F/flags.dict
{
  echo "# tests/fuzz/npy.dict: made by tests/fuzz/make_seeds.sh: the .npy preamble and header words."
  for s in '\x93NUMPY' '\x93NUMPY\x01\x00' '\x93NUMPY\x02\x00' '\x93NUMPY\x03\x00' "'descr'" "'fortran_order'" \
           "'shape'" "'<f4'" "'<i4'" "'>f4'" "'|u1'" 'True' 'False' '(' ')' ',)' '()' '{' '}' ': ' ', ' \
           '2147483647' '4294967296'; do printf '"%s"\n' "$s"; done
} >$F/npy.dict

# ---- experiment ----
for f in experiments/*.yaml; do cp "$f" "$C/experiment/exp-$(basename "$f")"; done
for f in tests/yaml/*.yaml; do cp "$f" "$C/experiment/test-$(basename "$f")"; done
{ cat experiments/quick.yaml; printf '\0seq=64\0sweep.window=[8, 16]\0repeat=2'; } >$C/experiment/set-quick.bin
{ cat experiments/quick_copy.yaml; printf '\0params.steps=3\0timing.runs=9\0sweep.seq=[32]'; } >$C/experiment/set-copy.bin

# ---- train_config ----
printf 'task: copy\nseq: 64\nd_model: 32\nheads: 2\nlayers: 2\nbackend: routing\nclusters: 4\nsteps: 10\n' \
  >$C/train_config/copy-routing.yaml
printf 'params:\n  backend: hybrid\n  local_layers: 1\n  layers: 3\n  heads: 4\n  local_heads: 2\n  pos: rotary\n' \
  >$C/train_config/params-hybrid.yaml
printf 'layer_backends: "local, dense, lsh"\nlayers: 3\nhashes: 2\nbuckets: auto\nlr: 1e-3\nmin_lr: auto\nwarmup: 5\n' \
  >$C/train_config/layer-backends.yaml
printf 'task: text\ndata: data/kjv.txt\ntrain_frac: 0.8\nval_frac: 0.1\nseed: 7\nsave: x.ckpt\nsave_every: 5\n' \
  >$C/train_config/text.yaml
printf 'kmeans_init_iters: 2\ncommit_beta: 0.5\nshare_qk: true\nassign: argmax\nnorm: layernorm\ndecay: 0.99\n' \
  >$C/train_config/old-spellings.yaml
cp tests/yaml/good_train.yaml $C/train_config/experiment-file.yaml

# ---- checkpoint, npy and manifest from routebench itself ----
small="--task copy --seq 16 --d-model 8 --heads 2 --batch 1 --steps 2 --eval-batches 1 $T"
"$RB" train $small --layers 1 --save "$tmp/dense.ckpt" >/dev/null 2>&1
"$RB" train $small --layers 1 --backend routing --clusters 2 --save "$tmp/routing.ckpt" >/dev/null 2>&1
"$RB" train $small --layers 2 --backend routing --local-layers 1 --clusters 2 --pos rotary \
  --save "$tmp/local-routing.ckpt" >/dev/null 2>&1
for k in dense routing local-routing; do cp "$tmp/$k.ckpt" "$C/checkpoint/$k.ckpt"; done
"$RB" export "$tmp/routing.ckpt" "$tmp/export" $T >/dev/null
cp "$tmp/export/manifest.json" $C/manifest/export-routing.json
for a in wte.weight h.0.attn.centroids ln_f.bias h.0.mlp.fc.weight; do cp "$tmp/export/$a.npy" "$C/npy/export-$a.npy"; done
"$RB" attn --backend routing --seq 16 --heads 1 --head-dim 4 --clusters 2 --save "$tmp/attn" $T >/dev/null
cp "$tmp/attn/manifest.json" $C/manifest/attn-routing.json
for a in q members centroids_before; do cp "$tmp/attn/$a.npy" "$C/npy/attn-$a.npy"; done
# hand-made: format 2.0, a scalar, an empty array, Fortran order of a vector
npy_hand() { # FILE MAJOR DICT DATA(printf escapes): the header padded as NumPy pads it
  local out=$1 major=$2 dict=$3 data=$4 pre=10 hlen pad
  [ "$major" = 1 ] || pre=12
  hlen=$(( (pre + ${#dict} + 1 + 63) / 64 * 64 - pre )); pad=$(( hlen - ${#dict} - 1 ))
  { printf '\x93NUMPY'; printf "\\x0$major\\x00"
    printf "\\x$(printf %02x $((hlen & 255)))\\x$(printf %02x $((hlen >> 8)))"
    [ "$major" = 1 ] || printf '\0\0'
    printf '%s%*s\n' "$dict" $pad ''; printf "$data"; } >"$out"
}
npy_hand $C/npy/v2.npy 2 "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" '\0\0\x80\x3f\0\0\0\x40'
npy_hand $C/npy/v3-scalar.npy 3 '{"descr": "<f4", "fortran_order": False, "shape": ()}' '\0\0\x80\x3f'
npy_hand $C/npy/empty.npy 1 "{'descr': '<i4', 'fortran_order': True, 'shape': (0, 3), }" ''
npy_hand $C/npy/fortran.npy 1 "{'shape': (1, 3, 1), 'fortran_order': True, 'descr': '<i4'}" '\1\0\0\0\2\0\0\0\3\0\0\0'
printf '{"config": {"backend": "dense", "layers": 1, "d_model": 8, "heads": 2, "share_qk": true, "seq": 16, "x": null}}' \
  >$C/manifest/small.json
printf '[1, -0.5e+3, "\\u00e9\\ud83d\\ude00\\n\\"", {"a": [true, false, null, {}], "a": []}, 1E-2]' >$C/manifest/edge.json

# ---- flags: mode byte, then NUL-separated arguments ----
argv() { local mode=$1; shift; printf "\\x0$mode"; local first=1 a; for a in "$@"; do
  [ $first = 1 ] || printf '\0'; first=0; printf '%s' "$a"; done; }
i=0
set -f # the README's arguments are words, not globs
grep -E '^ +build/routebench (attn|train|run) ' README.md | sed -e 's/#.*//' -e 's/\\$//' -e 's/^ *build\/routebench //' |
while read -r cmd rest; do
  case $cmd in attn) m=0 ;; train) m=1 ;; *) m=2 ;; esac
  i=$((i + 1))
  # shellcheck disable=SC2086
  argv $m $rest >"$C/flags/readme-$i.bin"
done
set +f
argv 0 --backend hybrid --seq 512 --heads 4 --local-heads auto --local-window 32 --no-causal --json >$C/flags/attn-hybrid.bin
argv 0 --backend lsh --seq 64 --hashes 2 --buckets 4 --share-qk false --tol 0.1 --min-time 0 -- extra >$C/flags/attn-lsh.bin
argv 1 --config c.yaml --d-model 64 --layers 2 --layer-backends local,routing --commit-beta 1e-3 --dry-run >$C/flags/train.bin
argv 1 --load x.ckpt --steps 10 --bench 3 --json --help >$C/flags/train-help.bin
argv 2 e.yaml --set seq=64 --set sweep.window=[8] --timeout 5m --checkpoint-every 0 --order name --from-last -q \
  >$C/flags/run.bin
argv 2 --dry-run --shard 1/2 --filter 'routing-*' e.yaml >$C/flags/run-shard.bin

n=$(find $C -type f | wc -l); size=$(du -sk $C | cut -f1)
echo "make_seeds: $n seeds, ${size} KB in $C; dictionaries $F/experiment.dict, flags.dict, npy.dict"
