#!/usr/bin/env bash
# The whole suite, twice at once: as shipped, and with AUTOGEN_HTTP_FASTPATH=0, where no
# speed-up touches another library's internals (src/autogen_http_runtime/_compat.py). Most
# of a run is waiting on sockets and processes, so the two share the machine well.
# Arguments go to both pytest runs. Exits non-zero if either run fails.
set -u
cd "$(dirname "$0")/.."
py=.venv/bin/python
log=$(mktemp)
trap 'rm -f "$log"' EXIT
AUTOGEN_HTTP_FASTPATH=0 "$py" -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1 &
slow=$!
"$py" -m pytest "$@"
fast_status=$?
wait "$slow"
slow_status=$?
echo
echo "== the same suite with AUTOGEN_HTTP_FASTPATH=0 =="
if [ "$slow_status" -eq 0 ]; then
    grep -E "^[0-9]+ passed" "$log" || tail -n 3 "$log"
else
    cat "$log"
fi
[ "$fast_status" -eq 0 ] && [ "$slow_status" -eq 0 ]
