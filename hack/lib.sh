#!/usr/bin/env bash
# shellcheck shell=bash
# Helpers the build scripts share (hack/k8s-bins.sh, hack/helm.sh), sourced after they set `start`
# (SECONDS at the beginning of the build) and define `say`.

# shellcheck disable=SC2154  # start: set by the script that sources this file
elapsed() { printf '%dm%02ds' $(( (SECONDS-start)/60 )) $(( (SECONDS-start)%60 )); }

# Run a long command, printing a heartbeat every 30 s so a person (or CI) sees progress.
with_progress() {
  local label=$1; shift
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 &
    wait $! 2>/dev/null || true
    kill -0 "$pid" 2>/dev/null && say "  … $label still running ($(elapsed) so far)"
  done
  wait "$pid"
}
