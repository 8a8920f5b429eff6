#!/usr/bin/env bash
# readme_outputs.sh: the README's examples write nothing git would pick up
# (issue 15, item 17): every path an example gives to --save, --load, --out
# or --db lies under build/ or results/, or is ignored by .gitignore; the
# names a user is likely to choose when following the examples by hand
# (kjv.ckpt, pass/, mine/, out/, a checkpoint's temporary) are ignored.
. "$(dirname "$0")/tap.bash"
cd "$TOP" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# git check-ignore --no-index answers from .gitignore alone, in a checkout or
# a copy of the tree; without git, fall back to the copy's own .gitignore
if ! command -v git >/dev/null; then
  echo "1..0 # SKIP git is not installed"; exit 0
fi
# a throwaway repository with the project's .gitignore, so the test runs the
# same in a checkout, a tarball or a CI copy
git init -q "$tmp/repo" && cp .gitignore "$tmp/repo/"
ignored() { (cd "$tmp/repo" && git check-ignore -q --no-index "$1"); }

# the example lines of the README: indented code and fenced blocks
awk '/^```/{f=!f; next} f || /^    /' README.md >"$tmp/code"
grep -c routebench "$tmp/code" >"$tmp/nex"
[ "$(cat "$tmp/nex")" -gt 10 ]; ok $? "the README has $(cat "$tmp/nex") example lines naming routebench"
grep -oE -- '--(save|load|out|db) [^ ;|)`]+' "$tmp/code" | awk '{print $2}' | sort -u >"$tmp/paths"
[ -s "$tmp/paths" ]; ok $? "the examples name $(wc -l <"$tmp/paths") output paths"
bad=""
while read -r p; do
  case "$p" in build/*|results/*|/tmp/*|\$*|*NAME*|DB|DIR|FILE|PATH) continue ;; esac
  ignored "$p" || bad="$bad $p"
done <"$tmp/paths"
[ -z "$bad" ]; ok $? "every example output lies under build/ or results/ or is ignored (not:${bad:- none})"
for p in build/kjv.ckpt kjv.ckpt kjv.ckpt.tmp.1234 pass/q.npy mine/q.npy out/members.npy results/quick.db \
         results/quick.db-wal x.db; do
  ignored "$p"; ok $? "$p is ignored"
done
for p in results/published/quick.db README.md plots/readme/quick_scaling.png tests/fuzz/corpus/checkpoint/a.ckpt; do
  ! ignored "$p"; ok $? "$p is tracked, not ignored"
done
tap_end
