#!/usr/bin/env bash
# Runs the course's unreplicated reference system, the WDM project template
# (Flask + Redis, https://github.com/delftdata/wdm-project-template), natively
# on this machine the way its docker-compose.yml does: one Redis per service
# (password "redis", 512 MiB), each service as gunicorn with 2 workers, and
# nginx routing /orders/, /payment/ and /stock/ on one port. It is the
# baseline of docs/loadtest.md: load it with `cart-load --gateway`.
#
#   loadtest/wdm-template.sh CHECKOUT [PORT]        # foreground; Ctrl-C stops
#   loadtest/wdm-template.sh CHECKOUT PORT -- CMD…  # runs CMD, then stops
#
# CHECKOUT is a clone of the template (not part of this repository). Needs
# redis-server and nginx (installed from Debian's packages when run as root)
# and Python; the template's Python requirements go into a venv under
# target/wdm-template. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
checkout=$(cd "${1:?usage: $0 CHECKOUT [PORT] [-- CMD...]}" && pwd)
port="${2:-8000}"
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift

for dir in order payment stock; do
  [ -f "$checkout/$dir/app.py" ] || { echo "$checkout is not a WDM template checkout (no $dir/app.py)" >&2; exit 2; }
done

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install -y ${need[*]})" >&2; exit 2
  fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work="$root/target/wdm-template"
venv="$work/venv"
mkdir -p "$work"
if [ ! -x "$venv/bin/gunicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$checkout/order/requirements.txt" \
    -r "$checkout/payment/requirements.txt" -r "$checkout/stock/requirements.txt"
fi

run=$(mktemp -d /tmp/wdm-template.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Ports: Redis 6390-6392, services 5090-5092, nginx $port.
services=(order payment stock)
for i in 0 1 2; do
  svc=${services[$i]}
  redis-server --port $((6390 + i)) --bind 127.0.0.1 --requirepass redis \
    --maxmemory 512mb --save "" --dir "$run" --daemonize no \
    >"$run/$svc-redis.log" 2>&1 &
  pids+=($!)
done
sleep 0.5
for i in 0 1 2; do
  svc=${services[$i]}
  (cd "$checkout/$svc" && REDIS_HOST=127.0.0.1 REDIS_PORT=$((6390 + i)) \
    REDIS_PASSWORD=redis REDIS_DB=0 GATEWAY_URL="http://127.0.0.1:$port" \
    exec "$venv/bin/gunicorn" -b 127.0.0.1:$((5090 + i)) -w 2 --timeout 30 \
    --log-level=warning app:app) >"$run/$svc.log" 2>&1 &
  pids+=($!)
done
cat >"$run/nginx.conf" <<EOF
worker_processes 1;
pid $run/nginx.pid;
error_log $run/nginx-error.log;
daemon off;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path $run/body;
  proxy_temp_path $run/proxy;
  fastcgi_temp_path $run/fastcgi;
  uwsgi_temp_path $run/uwsgi;
  scgi_temp_path $run/scgi;
  upstream order-app { server 127.0.0.1:5090; }
  upstream payment-app { server 127.0.0.1:5091; }
  upstream stock-app { server 127.0.0.1:5092; }
  server {
    listen 127.0.0.1:$port;
    location /orders/ { proxy_pass http://order-app/; }
    location /payment/ { proxy_pass http://payment-app/; }
    location /stock/ { proxy_pass http://stock-app/; }
  }
}
EOF
"$nginx_bin" -c "$run/nginx.conf" -p "$run" >"$run/nginx.log" 2>&1 &
pids+=($!)

# Up once a user can be created through nginx (Python: curl may be absent).
python3 - "$port" <<'PY' || { echo "the template did not come up; logs in $run:" >&2; tail -n 5 "$run"/*.log >&2; exit 1; }
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/payment/create_user"
for _ in range(100):
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(1)
PY
echo "WDM template at http://127.0.0.1:$port (redis 6390-6392, gunicorn 5090-5092)"

if [ $# -gt 0 ]; then
  "$@"
else
  echo "Ctrl-C stops it."
  wait
fi
