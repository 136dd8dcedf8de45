#!/usr/bin/env bash
# `make run`: a private redis-server under ./var, the four daemons and the example lambda on
# their default ports, a demo topic and subscription, a few events published and shown as the
# lambda handles them. Ctrl-C stops everything this script started.
set -euo pipefail

BUILD=${BUILD:-build}
VAR=${VAR:-var}
REDIS_PORT=${MSM_RUN_REDIS_PORT:-6390}
export MSM_REDIS_URL="redis://127.0.0.1:${REDIS_PORT}"
export MSM_NAMESPACE=${MSM_NAMESPACE:-msm}
export MSM_FRONTEND_URL=http://127.0.0.1:8080

mkdir -p "$VAR/redis" "$VAR/log"
VAR=$(cd "$VAR" && pwd) # redis-server needs an absolute --dir; VAR may be either
pids=()

stop_all() {
    trap - INT TERM EXIT
    echo
    echo "run: stopping (${#pids[@]} processes)"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "run: stopped; logs are in $VAR/log, Redis data in $VAR/redis"
}
trap stop_all INT TERM EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$REDIS_PORT" 8080 8081 8082 8083 9000; do
    if ! port_free "$port"; then
        echo "run: port $port is in use; stop what holds it (or set MSM_RUN_REDIS_PORT)" >&2
        exit 1
    fi
done

start() { # name, then the command
    local name=$1; shift
    "$@" >>"$VAR/log/$name.log" 2>&1 &
    pids+=($!)
    echo "run: started $name (pid $!, log $VAR/log/$name.log)"
}

wait_ready() { # url, name
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "run: $2 did not become ready; last lines of its log:" >&2
    tail -n 20 "$VAR/log/$2.log" >&2 || true
    exit 1
}

start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$VAR/redis" \
    --appendonly yes --appendfsync always --save ""
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The example lambda is on loopback, which PUT subscription and the router refuse unless
# allowed (router/README.md "Safe endpoints"); both read the same setting.
ALLOW_LOCAL=--router.allow_networks=127.0.0.0/8,::1
start frontend "$BUILD/frontend/msm-frontend" "$ALLOW_LOCAL"
start scheduler "$BUILD/scheduler/msm-scheduler"
start flowcontrol "$BUILD/flowcontrol/msm-flowcontrol"
start router "$BUILD/router/msm-router" "$ALLOW_LOCAL"
: >"$VAR/demo-records.jsonl"
start lambda "$BUILD/lambda-sdk/msm-example-lambda" --record "$VAR/demo-records.jsonl"
wait_ready http://127.0.0.1:8080/readyz frontend
wait_ready http://127.0.0.1:8081/readyz scheduler
wait_ready http://127.0.0.1:8082/readyz flowcontrol
wait_ready http://127.0.0.1:8083/readyz router
wait_ready http://127.0.0.1:9000/readyz lambda

MSMCTL="$BUILD/tools/msmctl/msmctl"
"$MSMCTL" topic create demo
"$MSMCTL" sub create demo-sub --topic demo --endpoint http://127.0.0.1:9000/
sleep 1.5 # the daemons' registry watchers see the new subscription
"$MSMCTL" publish demo --data '{"hello":"world"}' --key demo-key --count 5

echo "run: events handled by the example lambda (one JSON line each; Ctrl-C to stop):"
tail -n +1 -f "$VAR/demo-records.jsonl" &
pids+=($!)
echo "run: try: $MSMCTL publish demo --data '{\"n\":1}'   and   $MSMCTL sub stats demo-sub"
wait "${pids[0]}"
