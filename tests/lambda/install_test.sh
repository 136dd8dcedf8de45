#!/usr/bin/env bash
# lambda.install: install the lambda SDK (component lambda-sdk) of a build into a temporary
# prefix and build a handler against it as a lambda owner would, with cc and pkg-config
# only: shared, then static. Each binary must answer --help and serve /healthz. A producer
# (CLIENT_C, msm/client.h) is built both ways too and run against a port nobody serves.
# Usage: install_test.sh CMAKE BUILD_DIR CC PKG_CONFIG HELLO_C CLIENT_C [EXTRA_CFLAGS]
# (EXTRA_CFLAGS: a sanitized build's libraries need the same -fsanitize at link time.)
set -euo pipefail

CMAKE=$1 BUILD=$2 CC=$3 PKG_CONFIG=$4 HELLO=$5 CLIENT=$6 EXTRA=${7:-}
TMP=$(mktemp -d)
child=
cleanup() {
    if [[ -n $child ]]; then
        kill -KILL "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "lambda.install: $*" >&2; exit 1; }

PREFIX=$TMP/prefix
"$CMAKE" --install "$BUILD" --component lambda-sdk --prefix "$PREFIX" >/dev/null

# The public headers and nothing else of common/.
headers=$(cd "$PREFIX/include/msm" && ls | sort | tr '\n' ' ')
[[ $headers == "client.h config.h err.h lambda.h log.h loop.h " ]] || fail "installed headers: $headers"
for lib in libmsm-lambda.a libmsm-lambda.so; do
    [[ -e $PREFIX/lib/$lib ]] || fail "missing lib/$lib"
done

export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
unset LD_LIBRARY_PATH
"$PKG_CONFIG" --exists msm-lambda msm-lambda-static || fail "pkg-config does not know msm-lambda"
libdir=$("$PKG_CONFIG" --variable=libdir msm-lambda)
std=(-std=c11 -Wall -Wextra -Werror)
# shellcheck disable=SC2206 # the extra flags are meant to be split
[[ -n $EXTRA ]] && std+=($EXTRA)

# shellcheck disable=SC2046 # pkg-config output is meant to be split
"$CC" "${std[@]}" "$HELLO" -o "$TMP/hello-shared" $("$PKG_CONFIG" --cflags --libs msm-lambda)
# shellcheck disable=SC2046
"$CC" "${std[@]}" "$HELLO" -o "$TMP/hello-static" $("$PKG_CONFIG" --cflags --libs msm-lambda-static)
# shellcheck disable=SC2046
"$CC" "${std[@]}" "$CLIENT" -o "$TMP/client-shared" $("$PKG_CONFIG" --cflags --libs msm-lambda)
# shellcheck disable=SC2046
"$CC" "${std[@]}" "$CLIENT" -o "$TMP/client-static" $("$PKG_CONFIG" --cflags --libs msm-lambda-static)

check() { # name, env...: --help, then /healthz on a free port, then SIGTERM
    local bin=$TMP/$1 port= line
    shift
    env "$@" "$bin" --help >"$TMP/help.txt" || fail "$bin --help failed"
    grep -q -- '--greeting' "$TMP/help.txt" || fail "$bin --help lacks the lambda's own flag"

    env "$@" "$bin" --port 0 --bind 127.0.0.1 2>"$TMP/log.txt" &
    child=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/.*ready on port \([0-9]*\).*/\1/p' "$TMP/log.txt" | head -n 1)
        [[ -n $port ]] && break
        kill -0 "$child" 2>/dev/null || fail "$bin exited early: $(cat "$TMP/log.txt")"
        sleep 0.05
    done
    [[ -n $port ]] || fail "$bin never said it was ready: $(cat "$TMP/log.txt")"
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 || true
    exec 3<&-
    [[ $line == "HTTP/1.1 200"* ]] || fail "$bin /healthz answered: $line"
    kill -TERM "$child"
    wait "$child" || fail "$bin did not exit 0 after SIGTERM"
    child=
    echo "lambda.install: $(basename "$bin") ok"
}

check hello-shared LD_LIBRARY_PATH="$libdir"
if readelf -d "$TMP/hello-static" 2>/dev/null | grep -q 'libmsm-lambda'; then
    fail "hello-static still needs libmsm-lambda.so"
fi
check hello-static

# Port 1 (tcpmux) is served nowhere in practice: the producer must report it, not hang.
LD_LIBRARY_PATH="$libdir" timeout 20 "$TMP/client-shared" "http://127.0.0.1:1" ||
    fail "client-shared did not report the unreachable frontend"
timeout 20 "$TMP/client-static" "http://127.0.0.1:1" ||
    fail "client-static did not report the unreachable frontend"
echo "lambda.install: client-shared, client-static ok"
