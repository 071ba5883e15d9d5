#!/usr/bin/env bash
# Runs every Mesh test on a fresh machine: installs and starts what the tests need (the DynamoDB
# emulator, Redis, the OpenAI SDKs, cargo-lambda), runs the workspace tests, stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

log "python tools: moto (DynamoDB emulator), openai SDK, LangChain's ChatOpenAI, cargo-lambda, cfn-lint, SAM CLI"
tools=('moto[server]>=5.1' 'openai>=1.80' 'langchain-openai==1.7.4' 'cargo-lambda>=1.8' 'ziglang' 'cfn-lint>=1.20' 'aws-sam-cli>=1.120')
python3 -m pip install --quiet --disable-pip-version-check "${tools[@]}" >/dev/null 2>&1 \
  || python3 -m pip install --disable-pip-version-check "${tools[@]}"
# The conformance suite's clients (OpenAI SDK, Agents SDK, LangChain), pinned exactly.
python3 -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements-conformance.txt >/dev/null 2>&1 \
  || python3 -m pip install --disable-pip-version-check -r tests/sdk/requirements-conformance.txt
# pyenv installs console scripts behind shims; make sure new ones are visible.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

log "node clients (tests/node: the OpenAI SDK, the Vercel AI SDK)"
if command -v npm >/dev/null 2>&1; then
  (cd tests/node && npm install --silent --no-audit --no-fund >/dev/null 2>&1 || npm install --no-audit --no-fund)
fi

log "redis on 127.0.0.1:6379"
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

log "DynamoDB emulator (moto's server, in memory, one request at a time: tests/dynamodb_emulator.py)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 tests/dynamodb_emulator.py 127.0.0.1 "$port" >"${TMPDIR:-/tmp}/mesh-moto-$port.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export MESH_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

log "build (binaries are used by the end-to-end tests)"
cargo build --workspace --bins

log "tests"
cargo test --workspace "$@"

log "template.yaml: cfn-lint and sam validate --lint (offline)"
cfn-lint template.yaml
AWS_DEFAULT_REGION=us-east-1 sam validate --lint --template template.yaml --region us-east-1

log "Lambda artifact: cargo lambda build --release --arm64"
cargo lambda build --release --arm64 -p responses --bin responses
bootstrap=target/lambda/responses/bootstrap
[ -f "$bootstrap" ] || { echo "no $bootstrap"; exit 1; }
echo "arm64 bootstrap: $(stat -c %s "$bootstrap") bytes ($(( $(stat -c %s "$bootstrap") / 1048576 )) MiB)"
