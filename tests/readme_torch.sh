#!/usr/bin/env bash
# readme_torch.sh: the README's PyTorch check runs as written (on Debian 12's
# python3-torch 1.13) and finds routebench's dense pass equal to an
# independent double-precision softmax: forward and all three gradients.
# The lines are taken from README.md between the readme-snippet markers, so
# the README cannot drift from what works. Skipped without torch.
. "$(dirname "$0")/tap.bash"
rb_abs
README=$TOP/README.md
if ! /usr/bin/python3 -c "import torch, numpy" 2>/dev/null; then
  echo "1..0 # SKIP /usr/bin/python3 has no torch and numpy (apt-get install python3-torch python3-numpy)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sed -n '/^<!-- readme-snippet: torch -->$/,/^<!-- \/readme-snippet -->$/p' "$README" | sed '1d;$d' |
  sed 's/^    //' | sed "s#build/routebench#$RB#" >"$tmp/snippet.sh"
[ "$(wc -l <"$tmp/snippet.sh")" -gt 5 ]; ok $? "the snippet is in README.md ($(wc -l <"$tmp/snippet.sh") lines)"
(cd "$tmp" && mkdir -p build && bash snippet.sh) >"$tmp/o" 2>&1; rc=$?
ok $rc "it runs (rc $rc: $(tail -c 300 "$tmp/o" | tr '\n' ' '))"
for t in out dq dk dv; do
  v=$(awk -v t=$t '$1 == t { print $2 }' "$tmp/o")
  awk -v v="${v:-1}" 'BEGIN { exit !(v + 0 < 1e-4) }'; ok $? "$t: largest difference from the double softmax $v < 1e-4"
done
tap_end
