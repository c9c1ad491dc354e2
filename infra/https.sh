#!/usr/bin/env bash
# Local HTTPS, as LifeMonitor's guide has it: a self-signed multi-domain certificate and
# Debian's nginx as a TLS proxy in front of the API (docs/https.md).
#
#   infra/https.sh certs    # CERTS_DIR/lm.crt + lm.key for CERT_DOMAINS (openssl)
#   infra/https.sh start    # nginx on NGINX_BIND:NGINX_PORT -> http://API_HOST:API_PORT
#   infra/https.sh stop     # stop that nginx (by its pid file), wait until it is gone
#   infra/https.sh status
#
# Settings (environment; the Makefile passes its variables of the same names):
#   CERT_DOMAINS  "localhost seek lm"    names in the certificate (the first is its CN)
#   CERT_DAYS     825
#   CERTS_DIR     certs
#   NGINX_PORT    8443                   NGINX_BIND 127.0.0.1
#   API_PORT      8000 (PORT)            API_HOST   127.0.0.1
#   NGINX_DIR     .run/nginx             config, pid file, logs and temp files
# nginx is installed with apt-get when missing (as root; otherwise the script says how).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

CERT_DOMAINS=${CERT_DOMAINS:-localhost seek lm}
CERT_DAYS=${CERT_DAYS:-825}
CERTS_DIR=${CERTS_DIR:-certs}
NGINX_PORT=${NGINX_PORT:-8443}
NGINX_BIND=${NGINX_BIND:-127.0.0.1}
API_PORT=${API_PORT:-${PORT:-8000}}
API_HOST=${API_HOST:-127.0.0.1}
NGINX_DIR=${NGINX_DIR:-.run/nginx}
abs() { [[ $1 == /* ]] && echo "$1" || echo "$root/$1"; }
CERTS_DIR=$(abs "$CERTS_DIR")
NGINX_DIR=$(abs "$NGINX_DIR")
cert=$CERTS_DIR/lm.crt
key=$CERTS_DIR/lm.key
conf=$NGINX_DIR/nginx.conf
pidfile=$NGINX_DIR/nginx.pid

die() {
    echo "https.sh: $*" >&2
    exit 1
}

check_port() {  # check_port PORT NAME
    [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)) || die "$2 must be a port number, got '$1'"
}

certs() {
    local domains=() san="" d
    read -r -a domains <<<"$CERT_DOMAINS"
    ((${#domains[@]})) || die "CERT_DOMAINS is empty"
    for d in "${domains[@]}"; do
        [[ $d =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "not a host name: '$d'"
        san+="${san:+,}DNS:$d"
    done
    san+=",IP:127.0.0.1,IP:::1"
    if [[ -f $cert && -f $key && -f $CERTS_DIR/.domains &&
        $(cat "$CERTS_DIR/.domains") == "$CERT_DOMAINS" ]] &&
        openssl x509 -checkend 86400 -noout -in "$cert" >/dev/null; then
        echo "certificate $cert already covers: $CERT_DOMAINS"
        return
    fi
    mkdir -p "$CERTS_DIR"
    (
        umask 077  # the private key is never readable by others, not even for a moment
        openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$CERT_DAYS" \
            -keyout "$key.tmp" -out "$cert.tmp" -subj "/CN=${domains[0]}" \
            -addext "subjectAltName=$san" \
            -addext "basicConstraints=critical,CA:FALSE" \
            -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
            -addext "extendedKeyUsage=serverAuth" 2>"$CERTS_DIR/.openssl.log" ||
            { cat "$CERTS_DIR/.openssl.log" >&2; die "openssl failed"; }
    )
    chmod 0644 "$cert.tmp"
    mv "$key.tmp" "$key"
    mv "$cert.tmp" "$cert"
    echo "$CERT_DOMAINS" >"$CERTS_DIR/.domains"
    rm -f "$CERTS_DIR/.openssl.log"
    echo "created $cert (and $key, mode 0600) for: $CERT_DOMAINS"
}

find_nginx() {
    local n
    for n in "${NGINX:-}" "$(command -v nginx || true)" /usr/sbin/nginx; do
        [[ -n $n && -x $n ]] && { echo "$n"; return; }
    done
}

ensure_nginx() {
    local n
    n=$(find_nginx)
    if [[ -z $n ]]; then
        if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
            die "nginx is not installed; as root: apt-get install nginx (Debian's package)"
        fi
        echo "installing nginx with apt-get (Debian's package) ..." >&2
        # policy-rc.d or not, never leave the distribution's own nginx service running.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx \
            >&2 || {
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >&2
        } || die "apt-get install nginx failed"
        n=$(find_nginx)
        [[ -n $n ]] || die "nginx still not found after apt-get install"
    fi
    echo "$n"
}

running_pid() {
    [[ -f $pidfile ]] || return 1
    local pid
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_in_use() {  # port_in_use HOST PORT
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
PY
}

start() {
    check_port "$NGINX_PORT" NGINX_PORT
    check_port "$API_PORT" API_PORT
    local pid nginx user_line=""
    if pid=$(running_pid); then
        echo "nginx already running (pid $pid): https://localhost:$NGINX_PORT"
        return
    fi
    [[ -f $cert && -f $key ]] || certs
    if port_in_use "$NGINX_BIND" "$NGINX_PORT"; then
        die "port $NGINX_PORT on $NGINX_BIND is in use: choose another with NGINX_PORT=..."
    fi
    nginx=$(ensure_nginx)
    mkdir -p "$NGINX_DIR/tmp"
    # As root the workers would run as nobody, who cannot use the temp files here.
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    sed -e "s|@RUN@|$NGINX_DIR|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@BIND@|$NGINX_BIND|g" \
        -e "s|@CERT@|$cert|g" -e "s|@KEY@|$key|g" -e "s|@DOMAINS@|$CERT_DOMAINS|g" \
        -e "s|@API_HOST@|$API_HOST|g" -e "s|@API_PORT@|$API_PORT|g" -e "s|@USER@|$user_line|g" \
        infra/https/nginx.conf.template >"$conf"
    "$nginx" -t -q -p "$NGINX_DIR" -c "$conf" -e "$NGINX_DIR/error.log" ||
        die "nginx refused the configuration $conf"
    "$nginx" -p "$NGINX_DIR" -c "$conf" -e "$NGINX_DIR/error.log"
    for _ in $(seq 50); do
        pid=$(running_pid) && break
        sleep 0.1
    done
    [[ -n ${pid:-} ]] || die "nginx did not start (see $NGINX_DIR/error.log)"
    if ! port_in_use "$API_HOST" "$API_PORT"; then
        echo "note: nothing listens on $API_HOST:$API_PORT yet (make run PORT=$API_PORT)" >&2
    fi
    echo "nginx (pid $pid): https://localhost:$NGINX_PORT -> http://$API_HOST:$API_PORT"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        echo "nginx not running"
        rm -f "$pidfile"
        return
    fi
    kill -QUIT "$pid"  # graceful: finish the requests in flight
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        sleep 0.5
    fi
    rm -f "$pidfile"
    echo "nginx (pid $pid) stopped"
}

status() {
    local pid
    if pid=$(running_pid); then
        echo "nginx running (pid $pid): https://localhost:$NGINX_PORT"
    else
        echo "nginx not running"
        return 3
    fi
}

case ${1:-} in
certs) certs ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 certs|start|stop|status" >&2
    exit 2
    ;;
esac
