#!/usr/bin/env bash
# layering.sh: the include direction of core/ (README, "Layout"). Each folder
# may include headers only from the folders listed for it below; anything
# else is a dependency going the wrong way and fails (`make warn-check` runs
# this, and so does `make check`). System headers (<...>) are not checked.
# A header included by bare name must sit beside the including file.
set -u
cd "$(dirname "$0")/.." || exit 1
allowed() {
  case $1 in
    core/util)    echo "util" ;;
    core/attn)    echo "util attn" ;;
    variants)     echo "util attn" ;;
    core/model)   echo "util attn model" ;;
    core/store)   echo "util store" ;;
    core/harness) echo "util attn model store harness" ;;
    core/report)  echo "util store report" ;;
    core/cli)     echo "util attn model store harness report cli" ;;
    *)            echo "" ;;
  esac
}
n=0; fail=0
for dir in core/util core/attn variants core/model core/store core/harness core/report core/cli; do
  ok=$(allowed $dir)
  bad=""
  for f in "$dir"/*.c "$dir"/*.h; do
    [ -e "$f" ] || continue
    while IFS= read -r inc; do
      case $inc in
        */*) top=${inc%%/*}
             case " $ok " in *" $top "*) ;; *) bad="$bad $f:$inc" ;; esac ;;
        *)   [ -e "$dir/$inc" ] || bad="$bad $f:$inc(not-beside)" ;;
      esac
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
  done
  n=$((n+1))
  if [ -z "$bad" ]; then echo "ok $n - $dir includes only from: $ok"
  else echo "not ok $n - $dir includes against the layering ($ok):$bad"; fail=1; fi
done
# core/ has no files outside its concern folders
n=$((n+1)); stray=$(find core -maxdepth 1 -type f | tr '\n' ' ')
if [ -z "$stray" ]; then echo "ok $n - no files directly in core/"; else echo "not ok $n - files directly in core/: $stray"; fail=1; fi
echo "1..$n"
exit $fail
