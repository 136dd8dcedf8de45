#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages msm builds and tests with. Idempotent: does nothing
# when every package is already present; otherwise needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    librdkafka-dev libhiredis-dev libprotobuf-c-dev protobuf-c-compiler libavro-dev
    libjansson-dev libmicrohttpd-dev libgnutls28-dev libcunit1-dev libcurl4-openssl-dev libssl-dev
    openssl
    redis-server
    postgresql-15 postgresql-15-wal2json libpq-dev
    python3 python3-yaml systemd binutils
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
# Node.js and npm run the Confluent client test (tests/frontend/confluent_client/). They
# are checked as commands: a Node.js from elsewhere (e.g. NodeSource, npm included) will do.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
