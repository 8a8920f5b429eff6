#!/usr/bin/env bash
# run_validate.sh: malformed experiment files (tests/yaml/bad_*.yaml) are
# refused before anything runs: exit status 2, a message naming the file,
# the line (and the key where there is one), and no database created, neither
# at --db nor at the default results/NAME.db. Also: --help documents the
# keys, --dry-run of a good file lists its trials and writes nothing.
. "$(dirname "$0")/tap.bash"
rb_abs
Y=$TESTS/yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/w"; cd "$tmp/w" || exit 1

# file  line:col  key (or - when the problem has no key)
while read -r f pos key; do
  [ -z "$f" ] && continue
  "$RB" run "$Y/$f" --db "$tmp/x.db" >"$tmp/o" 2>&1; rc=$?
  msg=$(head -c 300 "$tmp/o" | tr '\n' ' ')
  want="$f:$pos:"; [ "$key" != - ] && want="$want $key:"
  [ $rc = 2 ] && grep -qF "$want" "$tmp/o"
  ok $? "$f: exit 2 (got $rc) and '$want' in: $msg"
  ! grep -v '^routebench run:' "$tmp/o" | grep -qE "$f: |\(line 0\)"
  ok $? "$f: every problem has a line:col"
  [ ! -e "$tmp/x.db" ] && [ ! -e "$tmp/x.db-wal" ]; ok $? "$f: no database at --db"
  "$RB" run "$Y/$f" >/dev/null 2>&1
  [ ! -e results ]; ok $? "$f: no results/ directory at the default path"
done <<'TABLE'
bad_syntax.yaml 5:6 -
bad_tab.yaml 3:1 -
bad_unknown_key.yaml 6:3 clusers
bad_type.yaml 5:13 seq
bad_type_mapping.yaml 4:8 seq
bad_empty_list.yaml 5:8 seq
bad_negative.yaml 5:13 head_dim
bad_timeout.yaml 2:10 timeout
bad_impossible.yaml 10:7 clusters
bad_duplicate_key.yaml 6:3 seq
bad_utf8.yaml 2:18 -
bad_too_large.yaml 4:8 seq
bad_alias_bomb.yaml 2:4 -
bad_empty.yaml 1:1 -
bad_not_mapping.yaml 1:1 -
bad_missing_name.yaml 1:1 name
bad_kind.yaml 2:7 kind
bad_zip_length.yaml 7:13 window
bad_unknown_backend.yaml 5:20 backend
bad_two_docs.yaml 3:1 -
bad_repeat.yaml 2:9 repeat
bad_filter.yaml 7:13 seq
bad_top_level_param.yaml 2:1 seq
bad_name.yaml 1:7 name
bad_train_key.yaml 7:3 save
bad_zip_unknown_only.yaml 5:5 bogus
bad_zip_unknown_two.yaml 5:5 bogus
bad_zip_twice.yaml 5:5 seq
bad_zip_group_list.yaml 5:7 bogus
bad_zip_duplicated.yaml 6:5 window
bad_zip_scalar.yaml 5:13 window
bad_zip_mapping.yaml 5:13 window
bad_zip_wrong_type.yaml 5:14 window
bad_zip_nested.yaml 5:14 window
bad_zip_complex_key.yaml 5:7 -
bad_tag_str.yaml 4:10 -
bad_tag_int.yaml 4:11 -
bad_tag_custom.yaml 3:8 -
bad_tag_binary.yaml 4:14 -
bad_no_corpus.yaml 5:9 data
bad_params_heads.yaml 6:10 heads
bad_layer_backends.yaml 6:20 layer_backends
TABLE

# every problem of a file at once, in file order
"$RB" run "$Y/bad_many.yaml" --db "$tmp/x.db" >"$tmp/o" 2>&1; rc=$?
lines=$(grep -c '^.*bad_many.yaml:[0-9]*:[0-9]*:' "$tmp/o")
[ $rc = 2 ] && [ "$lines" = 4 ]; ok $? "bad_many.yaml: all 4 problems reported (got $lines, rc $rc)"
grep -o 'bad_many.yaml:[0-9][0-9]*' "$tmp/o" | cut -d: -f2 | sort -n -c 2>/dev/null; ok $? "problems listed in file order"
grep -q "did you mean 'warmup'" "$tmp/o"; ok $? "closest key suggested under timing"
grep -q "did you mean 'routing'" <("$RB" run "$Y/bad_unknown_backend.yaml" 2>&1); ok $? "closest backend suggested"
grep -q "did you mean 'clusters'" <("$RB" run "$Y/bad_unknown_key.yaml" 2>&1); ok $? "closest parameter suggested"

"$RB" run "$tmp/nonexistent.yaml" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "nonexistent.yaml.*cannot open" "$tmp/o"; ok $? "missing file: exit 2 with the path (got $rc)"
"$RB" run "$tmp" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "$tmp" "$tmp/o"; ok $? "a directory as the file: exit 2 with the path (got $rc: $(head -c 100 "$tmp/o" | tr '\n' ' '))"
"$RB" run >/dev/null 2>&1; [ $? = 2 ]; ok $? "no file: exit 2"
"$RB" run "$Y/../../experiments/example.yaml" --shard 3/3 >/dev/null 2>&1; [ $? = 2 ]; ok $? "--shard 3/3 refused"
"$RB" run "$Y/../../experiments/example.yaml" --bogus >/dev/null 2>&1; [ $? = 2 ]; ok $? "unknown option refused"

"$RB" run "$Y/../../experiments/example.yaml" --filter 'nosuch*' --db "$tmp/x.db" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "matches none" "$tmp/o" && [ ! -e "$tmp/x.db" ]; ok $? "a filter matching no trial: exit 2, no database"
"$RB" run "$Y/../../experiments/example.yaml" --filter 'routing-n128*' --dry-run >"$tmp/o" 2>&1
[ "$(tail -n +2 "$tmp/o" | grep -c .)" = 2 ] && ! tail -n +2 "$tmp/o" | grep -vq "routing-n128"; ok $? "--filter glob selects routing-n128-* (2 trials)"
"$RB" run "$Y/../../experiments/example.yaml" --filter 'local' --dry-run >"$tmp/o" 2>&1
[ "$(tail -n +2 "$tmp/o" | grep -c .)" = 2 ]; ok $? "--filter substring selects the 2 local trials"

"$RB" run --help >"$tmp/h" 2>&1; rc=$?
[ $rc = 0 ]; ok $? "run --help exits 0"
for k in name: description: kind: bench: repeat: seed: timing: params: sweep: zip: exclude: only: --db --threads --shard --filter --dry-run auto; do
  grep -q -- "$k" "$tmp/h"; ok $? "run --help documents $k"
done

"$RB" run "$Y/../../experiments/example.yaml" --dry-run >"$tmp/d" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "trials" "$tmp/d"; ok $? "--dry-run of the example exits 0 and lists trials"
[ ! -e results ]; ok $? "--dry-run writes no database"
cnt=$(head -1 "$tmp/d" | sed -n 's/^[^:]*: \([0-9]*\) trials.*/\1/p')
rows=$(tail -n +2 "$tmp/d" | grep -c .)
[ -n "$cnt" ] && [ "$cnt" = "$rows" ]; ok $? "--dry-run count ($cnt) equals the trials listed ($rows)"
"$RB" run "$Y/../../experiments/example.yaml" --dry-run --shard 1/2 >"$tmp/d1" 2>&1
"$RB" run "$Y/../../experiments/example.yaml" --dry-run --shard 0/2 >"$tmp/d0" 2>&1
a=$(tail -n +2 "$tmp/d0" | grep -c .); b=$(tail -n +2 "$tmp/d1" | grep -c .)
[ $((a + b)) = "$rows" ] && [ "$a" -ge 1 ] && [ "$b" -ge 1 ]; ok $? "--dry-run shards 0/2 and 1/2 split the trials ($a + $b = $rows)"
tap_end
