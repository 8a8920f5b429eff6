#!/usr/bin/env bash
# mutate.sh: mutation testing (`make mutate`). Each line of tests/mutants.txt
# is one single-line substitution and the tests that must notice it:
#
#   FILE[#N] @@ ORIGINAL LINE @@ REPLACEMENT LINE @@ TEST [TEST ...]
#
# The original line is matched whole, ignoring leading and trailing blanks
# (#N: its N-th occurrence when the same text appears more than once); the
# replacement keeps the line's indentation. A TEST is a C test program
# (test_store: build/tests/test_store) or a shell test (tests/run_resume.sh).
#
# The working tree (tracked and untracked files, not build outputs) is copied
# once and built; its tests must pass. Then for each mutant that copy is
# copied again, the line substituted, only what its tests need rebuilt (make
# recompiles the one changed object), its tests run until one fails (killed)
# or all pass (survived), and the copy removed. A mutant whose original line
# is no longer in FILE is STALE, one whose line is there more often than #N
# allows is AMBIGUOUS, one that does not compile is BUILD-FAIL: all of them,
# and any survivor, make the run fail, so code that moved is noticed.
#
#   tests/mutate.sh [FILTER]     FILTER: run only mutants whose line in
#                                mutants.txt contains it (e.g. store.c)
#   MUTATE_JOBS=N                mutants in parallel (default 2)
#   MUTANTS=FILE                 another list
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
list=${MUTANTS:-$top/tests/mutants.txt}
jobs=${MUTATE_JOBS:-2}
filter=${1:-}
t0=$(date +%s)
work=$(mktemp -d /tmp/rb_mutate.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 # one thread per test: the jobs run side by side

# ---- the mutants ----------------------------------------------------------
n=0
while IFS= read -r line || [ -n "$line" ]; do
  case $line in ''|'#'*) continue ;; esac
  [ -n "$filter" ] && case $line in *"$filter"*) ;; *) continue ;; esac
  n=$((n + 1))
  printf '%s\n' "$line" >"$work/mutant.$n"
done <"$list"
[ $n -gt 0 ] || { echo "mutate: no mutants in $list${filter:+ matching '$filter'}"; exit 1; }

field() { awk -v k="$2" 'BEGIN { FS = " @@ " } { v = $k; gsub(/^[ \t]+|[ \t]+$/, "", v); print v }' "$1"; }

# what has to be built: the test programs named, routebench for shell tests
targets=""
for i in $(seq 1 $n); do
  for t in $(field "$work/mutant.$i" 4); do
    case $t in
      *.sh) targets="$targets build/routebench" ;;
      *) targets="$targets build/tests/$t" ;;
    esac
  done
done
targets=$(echo $targets | tr ' ' '\n' | sort -u | tr '\n' ' ')

# ---- the unmutated copy ---------------------------------------------------
echo "mutate: $n mutants from ${list#$top/}; building the unmutated tree in $work/base"
mkdir -p "$work/base"
(cd "$top" && git ls-files -co --exclude-standard -z | xargs -0 tar cf - 2>/dev/null) | (cd "$work/base" && tar xf -)
if ! make -C "$work/base" -j"$jobs" BUILD=build $targets >"$work/base.log" 2>&1; then
  tail -20 "$work/base.log"; echo "mutate: the unmutated tree does not build"; exit 1
fi

run_test() { # dir test -> exit status of the test
  local d=$1 t=$2
  (cd "$d" && export BUILD=build && unset RB && { [ ! -x build/routebench ] || export RB="$d/build/routebench"; } &&
   case $t in
     *.sh) timeout 600 bash "$t" ;;
     *) timeout 600 "build/tests/$t" ;;
   esac) >"$d/test.log" 2>&1
}

alltests=$(for i in $(seq 1 $n); do field "$work/mutant.$i" 4; done | tr ' ' '\n' | sort -u)
for t in $alltests; do
  if ! run_test "$work/base" "$t"; then
    grep -v '^ok' "$work/base/test.log" | head -20
    echo "mutate: $t fails on the unmutated tree: fix that first"; exit 1
  fi
done

# ---- one mutant ----------------------------------------------------------
one() {
  local i=$1 m="$work/mutant.$i" d="$work/m$i" s=$(date +%s)
  local spec file occ from to tests where count status=SURVIVED killer=-
  spec=$(field "$m" 1); from=$(field "$m" 2); to=$(field "$m" 3); tests=$(field "$m" 4)
  file=${spec%%#*}; occ=1
  [ "$file" != "$spec" ] && occ=${spec#*#}
  # (the lines go through the environment: awk -v would expand backslashes)
  count=$(F="$from" awk '{ l = $0; gsub(/^[ \t]+|[ \t]+$/, "", l) } l == ENVIRON["F"] { c++ } END { print c + 0 }' "$work/base/$file" 2>/dev/null || echo 0)
  where=$(F="$from" awk -v o="$occ" '{ l = $0; gsub(/^[ \t]+|[ \t]+$/, "", l) } l == ENVIRON["F"] && ++c == o { print NR; exit }' "$work/base/$file" 2>/dev/null)
  if [ "$count" = 0 ]; then status=STALE
  elif [ -z "$where" ] || { [ "$spec" = "$file" ] && [ "$count" -gt 1 ]; }; then status=AMBIGUOUS
  else
    cp -a "$work/base" "$d"
    R="$to" awk -v n="$where" 'NR == n { match($0, /^[ \t]*/); print substr($0, 1, RLENGTH) ENVIRON["R"]; next } { print }' \
      "$work/base/$file" >"$d/$file"
    touch "$d/$file"
    local need=""
    for t in $tests; do case $t in *.sh) need="$need build/routebench" ;; *) need="$need build/tests/$t" ;; esac; done
    if ! make -C "$d" BUILD=build $need >"$d/build.log" 2>&1; then
      status=BUILD-FAIL
    else
      for t in $tests; do
        if ! run_test "$d" "$t"; then status=KILLED killer=$t; break; fi
      done
    fi
    rm -rf "$d"
  fi
  printf '%s|%s|%s|%s|%s|%s\n' "$i" "$file:${where:-?}" "$status" "$killer" "$(( $(date +%s) - s ))" "$to" >"$work/result.$i"
  local by=""
  [ "$killer" != - ] && by=" by $killer"
  echo "mutate: $i/$n $status $file:${where:-?}$by"
}

# ---- run them, a few at a time -------------------------------------------
running=0
for i in $(seq 1 $n); do
  one "$i" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

# ---- the table -------------------------------------------------------------
killed=0 bad=0
printf '\n%-3s  %-34s  %-10s  %-18s  %5s  %s\n' "#" "where" "result" "killed by" "s" "replacement"
for i in $(seq 1 $n); do
  IFS='|' read -r id where status killer secs to <"$work/result.$i"
  printf '%-3s  %-34s  %-10s  %-18s  %5s  %.70s\n' "$id" "$where" "$status" "$killer" "$secs" "$to"
  if [ "$status" = KILLED ]; then killed=$((killed + 1)); else bad=$((bad + 1)); fi
done
dur=$(( $(date +%s) - t0 ))
printf '\nmutate: %d of %d mutants killed (%d%%); %d survived, stale, ambiguous or did not build; %d s (%d jobs)\n' \
  $killed $n $((100 * killed / n)) $bad $dur "$jobs"
[ $bad -eq 0 ]
