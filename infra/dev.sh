#!/usr/bin/env bash
# Runs Mesh locally on the embedded store (no AWS account): loads the catalog, makes a dev key
# (kept in .mesh/dev-key), and serves on MESH_LISTEN (default 127.0.0.1:8080).
# Provider credentials come from the environment, e.g. MESH_PROVIDER_OPENAI_API_KEY=sk-...
set -euo pipefail
cd "$(dirname "$0")/.."
export MESH_STORE=local MESH_LOCAL_DIR="${MESH_LOCAL_DIR:-.mesh}"
cargo build -q -p mesh --bin mesh-admin -p responses
admin=target/debug/mesh-admin
"$admin" prices import infra/prices.json
if [ ! -s "$MESH_LOCAL_DIR/dev-key" ]; then
  "$admin" keys create --name dev --owner dev --rpm 600 >"$MESH_LOCAL_DIR/dev-key"
fi
echo "dev key: $(cat "$MESH_LOCAL_DIR/dev-key")"
exec target/debug/responses
