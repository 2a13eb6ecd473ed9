#!/bin/bash
# Usage: bench/soak_10k_devices.sh   (about 6 minutes; results in $SOAK_DIR, default /tmp/vigie-soak)
mkdir -p "${SOAK_DIR:-/tmp/vigie-soak}"
# 10,000 simulated devices for 5 minutes against a private Mosquitto and the hub (SQLite), memory sampled.
cd "$(dirname "$0")/.."
PORT=$(.venv/bin/python -c "from vigie.netutil import free_port; print(free_port())")
.venv/bin/python - <<PY &
from pathlib import Path
import time
from vigie.broker import start_broker
b = start_broker(Path("${SOAK_DIR:-/tmp/vigie-soak}/broker"), $PORT)
open("${SOAK_DIR:-/tmp/vigie-soak}/broker.pid","w").write(str(b.process.pid))
time.sleep(900)  # the script kills the broker when the fleet is done
PY
sleep 3
.venv/bin/vigie --log-level WARNING hub ingest --db ${SOAK_DIR:-/tmp/vigie-soak}/hub.sqlite --broker 127.0.0.1:$PORT > ${SOAK_DIR:-/tmp/vigie-soak}/ingest.log 2>&1 &
ING=$!
sleep 3
( while kill -0 $ING 2>/dev/null; do echo "$(date +%s) $(grep VmRSS /proc/$ING/status | awk '{print $2}') $(grep VmRSS /proc/$(cat ${SOAK_DIR:-/tmp/vigie-soak}/broker.pid)/status | awk '{print $2}')" >> ${SOAK_DIR:-/tmp/vigie-soak}/rss.log; sleep 10; done ) &
.venv/bin/vigie sim --devices 10000 --duration 300 --broker 127.0.0.1:$PORT --heartbeat 30 --window 10 --zones 2 --connect-rate 200 > ${SOAK_DIR:-/tmp/vigie-soak}/sim.log 2>&1
sleep 20
.venv/bin/python -c "
from hub.storage import SQLiteStore; s=SQLiteStore('${SOAK_DIR:-/tmp/vigie-soak}/hub.sqlite'); print('stored', s.count_events(), 'devices', len(s.list_devices()))" >> ${SOAK_DIR:-/tmp/vigie-soak}/sim.log
kill $ING; kill $(cat ${SOAK_DIR:-/tmp/vigie-soak}/broker.pid); kill %1 2>/dev/null
