# Helpers for the CLI tests. Source after setting M2N2 (the executable).
set -u
FAILS=0
PASSES=0
TMP=$(mktemp -d /tmp/m2n2-cli-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

ok() { PASSES=$((PASSES + 1)); }
bad() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

# expect_error RC PATTERN cmd... : exit code RC, exactly one stderr line, matching PATTERN.
expect_error() {
  local rc=$1 pat=$2; shift 2
  "$@" > "$TMP/out" 2> "$TMP/err"
  local got=$?
  local lines
  lines=$(grep -c . "$TMP/err")
  if [ "$got" != "$rc" ]; then bad "$* -> exit $got, expected $rc; stderr: $(cat "$TMP/err")"; return; fi
  if [ "$lines" != 1 ]; then bad "$* -> $lines stderr lines, expected 1: $(cat "$TMP/err")"; return; fi
  if ! grep -q -- "$pat" "$TMP/err"; then bad "$* -> stderr lacks '$pat': $(cat "$TMP/err")"; return; fi
  ok
}

expect_ok() {
  "$@" > "$TMP/out" 2> "$TMP/err"
  local got=$?
  if [ "$got" != 0 ]; then bad "$* -> exit $got: $(cat "$TMP/err")"; return 1; fi
  ok
}

check() {  # check DESCRIPTION condition-command...
  local what=$1; shift
  if "$@"; then ok; else bad "$what"; fi
}

finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" = 0 ]
}
