#!/usr/bin/env bash
# schemathesis against a running Spotter: starts the given binary (default: the debug
# build) on a free port with a fresh SQLite database, logs in as admin, and runs
# schemathesis from the server's own /api/openapi.json with the admin's token. Fails on a
# 5xx, a response that contradicts the document (status, content type, headers, schema),
# or a request that takes longer than the timeout (a hang).
#
#   tests/schemathesis/run.sh [path/to/spotter]
#   SPOTTER_ST_EXAMPLES=25 (examples per operation), SPOTTER_ST_VENV=.venv-schemathesis
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:-target/debug/spotter}"
EXAMPLES="${SPOTTER_ST_EXAMPLES:-50}"
VENV="${SPOTTER_ST_VENV:-target/schemathesis-venv}"
PASSWORD="schemathesis-admin-1"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/schemathesis/requirements.txt
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SPOTTER_BIND=127.0.0.1:0 \
SPOTTER_DATABASE_URL="sqlite://$WORK/spotter.db" \
SPOTTER_DATA_DIR="$WORK/data" \
SPOTTER_ADMIN_PASSWORD="$PASSWORD" \
SPOTTER_JWT_SECRET="schemathesis-secret-0123456789-0123456789" \
SPOTTER_LOGIN_MAX_FAILURES=1000000 \
RUST_LOG="warn,spotter=info" \
  "$BIN" serve 2>"$WORK/server.log" &
SERVER_PID=$!

ADDR=""
for _ in $(seq 1 300); do
  ADDR="$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's|listening on http://||')" || true
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "schemathesis: spotter did not start"; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/server.log"; echo "schemathesis: spotter did not start"; exit 1; }
BASE="http://$ADDR"

token() {
  curl -sf "$BASE/api/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# A member, a trainer and their conversation, so that ids 1..4 exist.
TOKEN="$(token)"
for role in trainer member staff; do
  curl -sf "$BASE/api/users" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"username\":\"st-$role\",\"password\":\"password-123\",\"role\":\"$role\"}" >/dev/null
done

CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
run() {
  "$VENV/bin/schemathesis" run "$BASE/api/openapi.json" --url "$BASE" \
    -H "Authorization: Bearer $1" --checks "$CHECKS" \
    --max-examples "$EXAMPLES" --request-timeout 10 --no-color \
    --seed "${SPOTTER_ST_SEED:-1}" "${@:2}"
}

echo "schemathesis: every operation but those that end the admin's session"
# Logging out, or changing the admin's password, revokes the token the run uses: those
# operations run last, each with a token of its own.
run "$TOKEN" --exclude-path /api/auth/logout --exclude-method PATCH
echo "schemathesis: user changes"
run "$(token)" --include-method PATCH
echo "schemathesis: logout"
run "$(token)" --include-path /api/auth/logout

if grep -q "panicked" "$WORK/server.log"; then
  grep -B2 -A10 "panicked" "$WORK/server.log"
  echo "schemathesis: the server panicked"
  exit 1
fi
kill -0 "$SERVER_PID" || { echo "schemathesis: the server died"; exit 1; }
echo "schemathesis: ok"
