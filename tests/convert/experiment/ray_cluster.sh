#!/usr/bin/env bash
# A real two-node Ray cluster on 127.0.0.1 inside a private network namespace, for tests.
#
# usage: unshare -n bash ray_cluster.sh BIN LOGDIR PORT COMMAND...
#   BIN: the venv's bin folder (ray, python); LOGDIR: where head.log / worker.log go;
#   COMMAND runs once both nodes are up, with RAY_ADDRESS=127.0.0.1:PORT in its environment.
# Inside the namespace 127.0.0.1 is the only address, so Ray cannot pick another one.
# Every process this starts stays in the caller's process group: the test ends them all
# by that group when this returns (Ray's daemons do not exit with `ray start --block`).
set -euo pipefail
ip link set lo up
BIN=$1 LOGS=$2 PORT=$3
shift 3
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
RAY_AUTH_TOKEN=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')
export RAY_AUTH_TOKEN
common=(--node-ip-address 127.0.0.1 --num-cpus 1 --disable-usage-stats --block)
"$BIN/ray" start --head --port "$PORT" --include-dashboard=false "${common[@]}" \
    >"$LOGS/head.log" 2>&1 &
for _ in $(seq 240); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.25
done
"$BIN/ray" start --address "127.0.0.1:$PORT" "${common[@]}" >"$LOGS/worker.log" 2>&1 &
"$BIN/python" - "127.0.0.1:$PORT" <<'PY'
import logging, sys, time
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        sys.exit("the worker node did not join")
    time.sleep(0.5)
ray.shutdown()
PY
RAY_ADDRESS="127.0.0.1:$PORT" "$@"
