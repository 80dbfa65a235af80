#!/bin/sh
# The demo agents' workload: the daemon, and one short Gemini CLI task after another through it.
set -eu
gemfleet-agent serve &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT INT TERM
sleep 3
i=0
while kill -0 "$daemon" 2>/dev/null; do
  i=$((i + 1))
  gemfleet-agent run --task "demo-${GEMFLEET_AGENT_AGENT_ID:-agent}-$((i % 3))" \
    -- -p "Demo request $i: reply with one short sentence." || echo "demo task $i failed" >&2
  sleep "${GEMFLEET_DEMO_PAUSE_SECS:-5}"
done
