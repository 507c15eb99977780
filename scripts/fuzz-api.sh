#!/usr/bin/env bash
# An independent OpenAPI fuzzer (schemathesis, pinned, from PyPI) against a real `trellis serve`
# (target/debug/trellis, built by the cargo steps of scripts/test.sh before this one).
#
# Why: the Rust tests check the inputs their authors thought of. This stage lets a tool that knows nothing
# about trellis but its published document (/api/openapi.json) generate hostile input - boundary values,
# wrong types, bodies of the wrong shape, odd Unicode in paths, undeclared methods, missing credentials -
# and send it to every operation of the running server. Hostile input generated, not imagined.
#
# The property that matters: the document says exactly what the handlers do. Every schemathesis check runs
# (`all`): no answer is a 5xx (a refusal is a 4xx naming what is wrong); every status, content type and body
# is documented and matches its schema; what the schema forbids is refused and what it allows is accepted
# (limits, formats and enums are in the schema, not only in the code); an undeclared method on a known path
# is 405 with `Allow`; no operation ignores its credentials; a deleted resource is gone. The one exception,
# `positive_data_acceptance` on the few operations whose bodies carry rules JSON Schema cannot state, is
# listed with its reasons where the configuration is written below. The stage fails on any finding, on a
# request that hangs (--request-timeout), and on a server that dies during the run. The time budget ends the
# run like the example count does; a run it ends still has to have tested every operation.
#
# Setup: a fresh data dir, a platform admin from TRELLIS__BOOTSTRAP__*, its access token for every request,
# an enterprise tenant `fuzz` with one of each resource (strategy, API key, MT5 account, user, model) whose
# ids the fuzzer draws path parameters from half of the time, so operations on `{strategy}`, `{key}`, ...
# reach their logic instead of answering 404.
# Left out: POST /api/v1/auth/logout (it would revoke the token the rest of the run uses). The tenant
# lifecycle operations (tier, suspend, resume, restart) are fuzzed against a second tenant, `fuzz-ops`, so a
# tier the fuzzer sets on `fuzz` (free: no models, no optimisations) does not gate the operations after it.
#
# Knobs: FUZZ_MAX_EXAMPLES (test cases per operation and phase, default 100), FUZZ_TIME_LIMIT (seconds for
# the fuzzer, default 150), FUZZ_SEED (replay a run: the seed is printed at its end), FUZZ_CHECKS (`all`, the
# default, or a comma-separated list of schemathesis checks, e.g. not_a_server_error,response_schema_conformance),
# TRELLIS_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

SCHEMATHESIS_VERSION=4.32.5
VENV=target/fuzz-venv  # under target/: ignored by git, removed by `cargo clean`
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
TIME_LIMIT="${FUZZ_TIME_LIMIT:-150}"
CHECKS="${FUZZ_CHECKS:-all}"
BIN="${TRELLIS_BIN:-target/debug/trellis}"

if [ ! -x "$BIN" ]; then
  echo "fuzz-api: $BIN is missing: scripts/test.sh builds it (cargo) before this stage" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"

work="$(mktemp -d "${TMPDIR:-/tmp}/trellis-fuzz.XXXXXX")"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# --- a real trellis serve -------------------------------------------------------------------------
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin_email="fuzz-admin@trellis.local"
admin_password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
# Only the settings of this run: no TRELLIS__* of the calling shell (e.g. a PostgreSQL URL) leaks in.
(
  for name in $(compgen -e | grep '^TRELLIS__' || true); do unset "$name"; done
  export TRELLIS_ENV=test TRELLIS__HTTP__PORT="$port" TRELLIS__STORAGE__DATA_DIR="$work/data" \
    TRELLIS__LOG__LEVEL=info TRELLIS__BOOTSTRAP__ADMIN_EMAIL="$admin_email" \
    TRELLIS__BOOTSTRAP__ADMIN_PASSWORD="$admin_password"
  exec "$BIN" serve
) >"$work/trellis.log" 2>&1 &
server_pid=$!

server_log_tail() {
  echo "fuzz-api: the last lines of trellis's log:" >&2
  tail -n 30 "$work/trellis.log" >&2
}

# Waits for /ready, signs in, creates the tenants and the resources, writes the schemathesis configuration
# and the token (read by the configuration from the environment, never put on a command line).
if ! FUZZ_ADMIN_PASSWORD="$admin_password" FUZZ_CHECKS="$CHECKS" "$VENV/bin/python" - "$base" "$work" "$admin_email" "$server_pid" <<'PY'
import json, os, sys, time, urllib.error, urllib.request

base, work, email, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")

deadline = time.time() + 30
while True:
    try:
        call("GET", "/ready")
        break
    except (urllib.error.URLError, ConnectionError, OSError):
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("fuzz-api: trellis serve exited before it was ready")
        if time.time() > deadline:
            sys.exit("fuzz-api: trellis serve was not ready (GET /ready) within 30 s")
        time.sleep(0.1)

token = call("POST", "/api/v1/auth/login", {"email": email, "password": os.environ["FUZZ_ADMIN_PASSWORD"]})["access_token"]
for tenant in ("fuzz", "fuzz-ops"):
    call("POST", "/api/v1/tenants", {"id": tenant, "name": tenant, "tier": "enterprise", "symbols": ["EURUSD", "GBPUSD"]}, token)
t = "/api/v1/tenants/fuzz"
call("POST", t + "/strategies", {"id": "fuzz-ema", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
                                 "volume": 0.1, "params": {"fast": 2, "slow": 3}}, token)
key = call("POST", t + "/api-keys", {"name": "fuzz", "scopes": ["read"]}, token)["key"]["id"]
call("POST", t + "/mt5-accounts", {"login": 5001, "server": "Fuzz-Server", "password": "fuzz-mt5-password"}, token)
user = call("POST", t + "/users", {"email": "viewer@fuzz.local", "password": "fuzz-viewer-password", "role": "viewer"}, token)["id"]
call("POST", t + "/models", {"name": "fuzz-model", "description": "seeded by scripts/fuzz-api.sh"}, token)

def dictionary(name, value):
    return f'{name} = {{ values = [{json.dumps(value)}] }}\n'

def bind(name):
    return f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}\n'

seeds = {"strategy": "fuzz-ema", "key": key, "login": 5001, "user": user, "model": "fuzz-model"}
# The checks: in the configuration, not on the command line, where naming a check would override the
# per-operation exceptions below.
checks = [c.strip() for c in os.environ["FUZZ_CHECKS"].split(",") if c.strip()]
if checks == ["all"]:
    checks_config = "[checks]\nenabled = true\n\n"
else:
    checks_config = "[checks]\nenabled = false\n" + "".join(f"{c} = {{ enabled = true }}\n" for c in checks) + "\n"
config = (
    checks_config +
    "[auth.openapi.bearer]\n"
    'bearer = "${TRELLIS_FUZZ_TOKEN}"\n\n'
    "[dictionaries]\n" + "".join(dictionary(n, v) for n, v in seeds.items()) + "\n"
    "[parameters]\n"
    '"path.tenant" = "fuzz"\n' + "".join(bind(n) for n in seeds) + "\n"
    "[[operations]]\n"
    'include-path-regex = "^/api/v1/tenants/\\\\{tenant\\\\}/(tier|suspend|resume|restart)$"\n'
    'parameters = { "path.tenant" = "fuzz-ops" }\n'
    # positive_data_acceptance holds that every body the schema allows is accepted. These operations take
    # bodies with rules JSON Schema cannot state, so a schema-valid body may rightly be refused (400, naming
    # the field); the check is off for them alone, every other check still runs on them:
    # - strategies: the parameters a kind takes and how they relate (ema_cross: fast < slow), the kinds
    #   themselves (the runtime's strategy registry, which an embedding program extends);
    # - optimisations: to_ms after from_ms, the grid's parameters per kind, the search's size;
    # - training jobs and deployments' retraining: from_ms <= to_ms, lower <= upper, feature names with
    #   related numbers (ema_ratio_F_S: F < S), promotion only for a direction model;
    # - model versions: the file must be an ONNX model that loads and matches its manifest;
    # - strategy modules: the file must be a WebAssembly module of the interface, within the tier's limits;
    # - deployments: the versions named must be in the registry and load together on the symbol;
    # - log queries: from_ms before to_ms, and a cursor must be one the server signed for the same query.
    "\n[[operations]]\n"
    "include-operation-id = [\n"
    '  "post /api/v1/tenants/{tenant}/strategies",\n'
    '  "put /api/v1/tenants/{tenant}/strategies/{strategy}",\n'
    '  "post /api/v1/tenants/{tenant}/optimisations",\n'
    '  "post /api/v1/tenants/{tenant}/models/{model}/jobs",\n'
    '  "post /api/v1/tenants/{tenant}/models/{model}/versions",\n'
    '  "post /api/v1/tenants/{tenant}/strategy-modules",\n'
    '  "post /api/v1/tenants/{tenant}/models/{model}/deployments",\n'
    '  "put /api/v1/tenants/{tenant}/models/{model}/deployments/{deployment}",\n'
    '  "get /api/v1/tenants/{tenant}/logs",\n'
    '  "get /api/v1/logs",\n'
    "]\n"
    "checks = { positive_data_acceptance = { enabled = false } }\n"
)
with open(os.path.join(work, "schemathesis.toml"), "w") as f:
    f.write(config)
with open(os.path.join(work, "token"), "w") as f:
    f.write(token)
PY
then
  server_log_tail
  exit 1
fi

# --- the fuzzer -----------------------------------------------------------------------------------
echo "fuzz-api: schemathesis $SCHEMATHESIS_VERSION against $base (checks: $CHECKS; max $MAX_EXAMPLES examples per operation and phase, ${TIME_LIMIT}s budget)"
seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(--seed "$FUZZ_SEED")
started=$SECONDS
set +e
(
  cd "$work"
  TRELLIS_FUZZ_TOKEN="$(cat token)" timeout -s INT -k 15 "$TIME_LIMIT" \
    "$root/$VENV/bin/schemathesis" --config-file schemathesis.toml run "$base/api/openapi.json" \
    --url "$base" \
    --exclude-operation-id "post /api/v1/auth/logout" \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    --report json --report-json-path report.json \
    "${seed_args[@]}"
)
fuzz_status=$?
set -e
elapsed=$((SECONDS - started))

# The time budget bounds the run, like the example count: a run it stops is judged on what it tested. It
# passes when every operation was tested and nothing failed or errored (a hanging request already fails
# through --request-timeout); without a report, or with too little tested, it fails.
if [ "$fuzz_status" -eq 124 ] || [ "$fuzz_status" -eq 137 ]; then
  if "$VENV/bin/python" - "$work/report.json" <<'PY'
import json, sys
try:
    with open(sys.argv[1]) as f:
        r = json.load(f)
except (OSError, ValueError):
    sys.exit(1)
cases, ops = r["test_cases"], r["operations"]
clean = cases["unique_failures"] == 0 and cases["errored"] == 0 and not r["errors"]
sys.exit(0 if clean and cases["generated"] > 0 and ops["tested"] == ops["selected"] else 1)
PY
  then
    echo "fuzz-api: schemathesis stopped at its ${TIME_LIMIT}s budget (FUZZ_TIME_LIMIT) with every operation tested and no failure"
    fuzz_status=0
  else
    echo "fuzz-api: schemathesis did not finish within ${TIME_LIMIT}s (FUZZ_TIME_LIMIT) and its report is missing, incomplete or has failures" >&2
  fi
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "fuzz-api: trellis serve exited during the run" >&2
  server_log_tail
  [ "$fuzz_status" -eq 0 ] && fuzz_status=1
fi
if grep -q 'panicked' "$work/trellis.log"; then
  echo "fuzz-api: trellis logged panics during the run:" >&2
  grep -A2 'panicked' "$work/trellis.log" | tail -n 30 >&2
fi
stop_server

# One closing line: what was tested, from schemathesis's JSON report.
"$VENV/bin/python" - "$work/report.json" "$elapsed" "$fuzz_status" <<'PY' || true
import json, sys
path, elapsed, status = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    with open(path) as f:
        r = json.load(f)
except (OSError, ValueError):
    print(f"fuzz-api: no report from schemathesis (exit status {status}) after {elapsed}s")
    sys.exit()
cases = r["test_cases"]
print(f"fuzz-api: {r['operations']['tested']} operations, {cases['generated']} examples, "
      f"{cases['unique_failures']} failures, {cases['errored'] + len(r['errors'])} errors "
      f"in {elapsed}s (seed {r['seed']}, exit status {status})")
PY
exit "$fuzz_status"
