#!/usr/bin/env bash
# Workstation: start the Ray head that the Jetson joins. Stop it with `ray stop` (stops every Ray on this machine).
# docs-test: skip (starts a Ray head on this machine; tests/tune/test_ray.py starts a real two-node cluster)
set -euo pipefail
PORT=${PORT:-6379}
ray start --head --port="$PORT" --include-dashboard=false --disable-usage-stats
echo "head up. On the Jetson:  ./worker.sh $(hostname -I | awk '{print $1}'):$PORT"
echo "token to copy to the Jetson (or export RAY_AUTH_TOKEN there): ~/.ray/auth_token"
