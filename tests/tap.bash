# tap.bash: the start every shell test shares; source it first thing,
#   . "$(dirname "$0")/tap.bash"
# It sets -u, $RB (the program, build/routebench unless given; rb_abs makes it
# an absolute path for a test that changes directory), $TESTS and $TOP (this
# folder and the top of the tree, absolute), and the TAP counting:
# `ok STATUS TEXT` prints "ok N - TEXT" when STATUS is 0, else "not ok N - TEXT";
# tap_end prints the plan and exits 1 if any failed. (Not a test itself: the
# Makefile runs tests/*.sh.)
set -u
RB=${RB:-build/routebench}
TESTS=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$TESTS/.." && pwd)
n=0; fail=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=1; fi; }
tap_end() { echo "1..$n"; exit $fail; }
rb_abs() { RB=$(cd "$(dirname "$RB")" && pwd)/$(basename "$RB"); }
