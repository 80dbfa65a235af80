#!/bin/sh
# One-shot demo setup: the emulator's demo projects and keys, registered with the recorder.
# The secrets are the emulator's fake ones (emulator/examples/emulator.toml), not real keys.
set -eu
gemfleet-recorder migrate
gemfleet-recorder projects set demo-free --tier free \
  --limit gemini-2.5-flash rpm=10,tpm=250000,rpd=250 \
  --limit gemini-2.5-pro rpm=5,tpm=250000,rpd=100
gemfleet-recorder projects set demo-paid --tier paid \
  --limit gemini-2.5-flash rpm=1000,tpm=1000000,rpd=10000,tpd=100000000
DEMO_KEY_1=demo-secret-1 gemfleet-recorder keys add demo-1 --project demo-free --secret-env DEMO_KEY_1 || true
DEMO_KEY_2=demo-secret-2 gemfleet-recorder keys add demo-2 --project demo-paid --secret-env DEMO_KEY_2 || true
gemfleet-recorder keys list
