#!/usr/bin/env bash
# Runs Mesh locally on the embedded store, with no AWS account and no provider account needed:
# builds the binaries, loads the catalog, configures the built-in offline provider `echo`
# (catalog id `mesh/echo`), makes a dev key (kept in $MESH_LOCAL_DIR/dev-key) and serves on
# MESH_LISTEN (default 127.0.0.1:8080). `--setup-only` prepares the store and exits.
#
# The dev key's default model is `mesh/echo` unless a provider key is set in the environment,
# e.g. MESH_PROVIDER_OPENAI_API_KEY=sk-... ./infra/dev.sh makes it `openai/gpt-4o-mini`.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESH_STORE=local MESH_LOCAL_DIR="${MESH_LOCAL_DIR:-.mesh}"
export MESH_LISTEN="${MESH_LISTEN:-127.0.0.1:8080}"
export MESH_PROVIDER_ECHO_API=echo
export MESH_PROVIDER_ECHO_TOKEN_DELAY_MS="${MESH_PROVIDER_ECHO_TOKEN_DELAY_MS:-20}"
target="${CARGO_TARGET_DIR:-target}"

echo "building mesh-admin and responses (the first build takes a few minutes)..." >&2
cargo build -q -p mesh-admin
cargo build -q -p responses --bin responses
admin="$target/debug/mesh-admin"
mkdir -p "$MESH_LOCAL_DIR"

"$admin" prices import infra/prices.json >/dev/null
"$admin" prices put mesh/echo --provider echo --upstream-model echo \
  --input-usd-per-mtok 0.10 --output-usd-per-mtok 0.40 \
  --context-length 128000 --max-output-tokens 4096 --default >/dev/null

# The default model: a model the first configured provider serves, else the offline one.
default_model=mesh/echo
for provider in openai anthropic gemini groq mistral together deepseek fireworks xai openrouter qwen; do
  var="MESH_PROVIDER_$(echo "$provider" | tr '[:lower:]' '[:upper:]')_API_KEY"
  if [ -n "${!var:-}" ]; then
    case "$provider" in
      openai) default_model=openai/gpt-4o-mini ;;
      anthropic) default_model=anthropic/claude-haiku-4.5 ;;
      *) # The first model of infra/prices.json whose default (primary) row is this provider's.
         default_model=$(awk -v p="\"provider\": \"$provider\"" '
           /"model":/ { gsub(/.*"model": "|",?$/, ""); model = $0; mine = 0; primary = 0 }
           index($0, p) { mine = 1 }
           /"is_default": true/ { primary = 1 }
           /^ *}/ { if (mine && primary) { print model; exit } }' infra/prices.json)
         default_model="${default_model:-mesh/echo}" ;;
    esac
    break
  fi
done

if [ ! -s "$MESH_LOCAL_DIR/dev-key" ]; then
  "$admin" keys create --name dev --owner dev --rpm 600 --default-model "$default_model" >"$MESH_LOCAL_DIR/dev-key.tmp"
  mv "$MESH_LOCAL_DIR/dev-key.tmp" "$MESH_LOCAL_DIR/dev-key"
  "$admin" keys list --json | awk '/"id": "key_/ { gsub(/.*"id": "|",?$/, ""); id = $0 } /"name": "dev"/ { print id }' \
    | tail -n1 >"$MESH_LOCAL_DIR/dev-key-id"
elif [ -s "$MESH_LOCAL_DIR/dev-key-id" ]; then
  "$admin" keys update "$(cat "$MESH_LOCAL_DIR/dev-key-id")" --default-model "$default_model" >/dev/null
fi
key=$(cat "$MESH_LOCAL_DIR/dev-key")
# The key the sample Lambda events in events/ carry, limited to the offline model, so that
# `cargo lambda invoke --data-file events/...` works against this store.
if [ ! -e "$MESH_LOCAL_DIR/sample-events-key" ]; then
  "$admin" keys create --name sample-events --owner sample-events --secret rsk_01JDEVKEY00000000000000000 \
    --models mesh/echo --rpm 600 >/dev/null
  touch "$MESH_LOCAL_DIR/sample-events-key"
fi
if [ "${1:-}" = "--setup-only" ]; then
  echo "set up $MESH_LOCAL_DIR (catalog, mesh/echo, dev key in $MESH_LOCAL_DIR/dev-key with default model $default_model, sample events' key)" >&2
  exit 0
fi

cat >&2 <<EOF

Mesh (dev) on http://$MESH_LISTEN  (embedded store in $MESH_LOCAL_DIR/)
  dev key:        $key   (also in $MESH_LOCAL_DIR/dev-key; 600 requests per minute)
  default model:  $default_model
  offline model:  mesh/echo (answers by echoing the input; see README "The offline provider")

Try it:
  curl -s http://$MESH_LISTEN/v1/responses -H "Authorization: Bearer $key" \\
    -H 'content-type: application/json' -d '{"input": "What is the capital of France?"}'

Add a provider: stop this and run e.g. MESH_PROVIDER_OPENAI_API_KEY=sk-... ./infra/dev.sh
See usage:      MESH_STORE=local MESH_LOCAL_DIR=$MESH_LOCAL_DIR $admin usage --owner dev

EOF
exec "$target/debug/responses"
