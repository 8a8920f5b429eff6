#!/usr/bin/env bash
# run.sh BUILD TARGET...: `make fuzz`'s campaign. Each target
# BUILD/fuzz/fuzz_TARGET (libFuzzer) runs for FUZZ_SECONDS (60) from a working
# corpus BUILD/fuzz/corpus/TARGET (new inputs go there, never into the
# tree), the seeds tests/fuzz/corpus/TARGET and the kept crashes
# tests/fuzz/crashes/TARGET, with the target's dictionary. A crash, leak,
# sanitizer report, failed check, an input slower than FUZZ_TIMEOUT (10) s or
# one needing more than FUZZ_RSS_MB (2048) MB fails the target: the
# reproducer libFuzzer wrote under BUILD/fuzz/artifacts/TARGET/ is named with
# the commands to replay and keep it. Every target runs; the exit status is 1
# when any failed. One summary line per target: execs/s, coverage (cov: edges,
# ft: features), corpus size, time.
set -u
cd "$(dirname "$0")/../.." || exit 2
B=$1; shift
S=${FUZZ_SECONDS:-60}
TO=${FUZZ_TIMEOUT:-10}
RSS=${FUZZ_RSS_MB:-2048}
failed=""
dict_of() {
  case $1 in
    experiment|train_config|checkpoint|manifest) echo tests/fuzz/experiment.dict ;;
    *) echo "tests/fuzz/$1.dict" ;;
  esac
}
for t in "$@"; do
  bin=$B/fuzz/fuzz_$t work=$B/fuzz/corpus/$t art=$B/fuzz/artifacts/$t log=$B/fuzz/$t.log
  if [ ! -x "$bin" ]; then echo "fuzz: $bin is missing (build it with make fuzz)"; failed="$failed $t"; continue; fi
  mkdir -p "$work" "$art"
  args=(-max_total_time="$S" -timeout="$TO" -rss_limit_mb="$RSS" -close_fd_mask=3 -print_final_stats=1
        -artifact_prefix="$art/")
  d=$(dict_of "$t"); [ -f "$d" ] && args+=(-dict="$d")
  dirs=("$work")
  for s in tests/fuzz/corpus/$t tests/fuzz/crashes/$t; do [ -d "$s" ] && dirs+=("$s"); done
  start=$(date +%s)
  "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  # the last status line: "#N  DONE  cov: C ft: F corp: K/SIZE ... exec/s: E ..."
  st=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  cov=$(echo "$st" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$st" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  corp=$(echo "$st" | grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' | cut -d' ' -f2)
  printf 'fuzz: %-13s %5ss  %9s execs  %6s exec/s  cov %5s  ft %6s  corpus %s\n' "$t" "$secs" "${execs:-?}" \
    "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  if [ $rc != 0 ] || grep -qE '^==[0-9]+==ERROR|runtime error:|^SUMMARY: |ERROR: libFuzzer' "$log"; then
    failed="$failed $t"
    why=$(grep -m1 -E '^==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer|fuzz: .*check failed|deadly signal' "$log")
    repro=$(grep -o 'Test unit written to .*' "$log" | tail -1 | sed 's/^Test unit written to //')
    echo "fuzz: $t FAILED (exit $rc): ${why:-see $log}"
    if [ -n "$repro" ]; then
      echo "fuzz:   reproducer: $repro"
      echo "fuzz:   replay it:  $bin $repro   (or, with the normal build: build/fuzz/replay_$t $repro)"
      echo "fuzz:   keep it as a regression test: cp $repro tests/fuzz/crashes/$t/ (make check replays it)"
    fi
    echo "fuzz:   log: $log"
  fi
done
if [ -n "$failed" ]; then echo "fuzz: FAILED:$failed"; exit 1; fi
echo "fuzz: every target ran ${S}s clean"
