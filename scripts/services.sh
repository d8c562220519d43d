# Sourced by scripts/test: make sure PostgreSQL (with PostGIS) and Redis answer locally.
set -euo pipefail

# PostGIS for the map API and Debian's Chromium for the browser tests, from apt when missing.
ensure_map_packages() {
  local pg_version wanted=()
  pg_version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
  pg_version="${pg_version:-15}"
  [ -e "/usr/share/postgresql/$pg_version/extension/postgis.control" ] \
    || wanted+=("postgresql-$pg_version-postgis-3")
  command -v chromium >/dev/null || wanted+=(chromium)
  # tests/reliability/test_slow_clients.py runs deploy/nginx.conf in front of gunicorn.
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || wanted+=(nginx-light)
  # ogrinfo / ogr2ogr: tests/web/test_ogc.py reads the OGC API and the exports with GDAL.
  command -v ogrinfo >/dev/null || wanted+=(gdal-bin)
  [ ${#wanted[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo ">> installing ${wanted[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${wanted[@]}" >/dev/null
  else
    echo "missing ${wanted[*]}: install them (apt-get install ${wanted[*]})" >&2
  fi
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
  if command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ]; then
    echo ">> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && return; sleep 1; done
  fi
  echo "PostgreSQL is not answering on 127.0.0.1:5432 (see README 'Running the tests')" >&2
  exit 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  if command -v redis-server >/dev/null; then
    echo ">> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis-cli ping >/dev/null 2>&1 && return; sleep 1; done
  fi
  echo "Redis is not answering on 127.0.0.1:6379 (see README 'Running the tests')" >&2
  exit 1
}
