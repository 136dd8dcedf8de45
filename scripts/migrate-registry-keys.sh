#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Moves the control-plane keys of msm 0.1 (topics, subs, registry:version, schemas:*,
# cdc:*) under the {registry} hash tag msm now uses (one Redis Cluster slot for the scripts
# that change several of them). Run it once, with every msm daemon stopped, on the
# standalone Redis or the Sentinel master that holds them:
#
#     scripts/migrate-registry-keys.sh [NAMESPACE] [redis-cli options…]
#     scripts/migrate-registry-keys.sh msm -h redis.internal -p 6379 -a "$PASSWORD"
#
# Idempotent: a key already moved is left alone (RENAMENX); it prints what it moved.
set -euo pipefail
ns="${1:-msm}"
shift || true
cli=(redis-cli "$@")

move() { # old new
    if [ "$("${cli[@]}" RENAMENX "$1" "$2" 2>/dev/null)" = "1" ]; then
        echo "moved $1 -> $2"
    fi
}

move "$ns:topics" "$ns:{registry}:topics"
move "$ns:subs" "$ns:{registry}:subs"
move "$ns:registry:version" "$ns:{registry}:version"
move "$ns:cdc:sources" "$ns:{registry}:cdc:sources"
for k in next_id fingerprints subjects config; do
    move "$ns:schemas:$k" "$ns:{registry}:schemas:$k"
done
"${cli[@]}" --scan --pattern "$ns:schemas:id:*" | while read -r k; do
    move "$k" "$ns:{registry}:schemas:id:${k#"$ns:schemas:id:"}"
done
"${cli[@]}" --scan --pattern "$ns:schemas:subject:{*}:versions" | while read -r k; do
    subject="${k#"$ns:schemas:subject:{"}"
    move "$k" "$ns:{registry}:schemas:subject:${subject%"}:versions"}:versions"
done
"${cli[@]}" --scan --pattern "$ns:cdc:{*}:*" | while read -r k; do
    rest="${k#"$ns:cdc:{"}"          # <source>}:cursor or <source>}:lock:<p>
    move "$k" "$ns:{registry}:cdc:${rest%%\}*}:${rest#*\}:}"
done
# Frontends cache subject ids by version: a bump makes every reader reload.
"${cli[@]}" INCR "$ns:{registry}:version" >/dev/null
