#!/usr/bin/env bash
# The system components the tests truly need, installed with apt in one place.
#   tools/system-deps.sh check    exit 1 and print the install command when one is missing
#   tools/system-deps.sh install  install the missing ones (root and apt-get needed)
# Each entry is "command:debian-package", or "/path/of/a/file:debian-package" for
# a component that is a file, not a command (a module).  Python packages never go
# here: they come from pip into .venv (make setup).
set -euo pipefail
NEEDED="openssl:openssl"
# MQTT bridge tests: a real broker; fleet page test: headless Chromium and its driver
NEEDED="$NEEDED mosquitto:mosquitto chromium:chromium chromedriver:chromium-driver"
# the emulated Pico (sim/pico/emu.mjs: rp2040js under Node >= 18; npm installs it)
NEEDED="$NEEDED node:nodejs npm:npm"
# issue 19: nginx's UDP proxy in front of service workers (docs/nginx-atls.conf)
NEEDED="$NEEDED nginx:nginx-light"
NEEDED="$NEEDED /usr/lib/nginx/modules/ngx_stream_module.so:libnginx-mod-stream"
# shared session state of service workers (host_tools/service/state_store.py): a real Redis
NEEDED="$NEEDED redis-server:redis-server"

missing_pkgs() {
  local out="" entry cmd pkg
  for entry in $NEEDED; do
    cmd=${entry%%:*}
    pkg=${entry#*:}
    case "$cmd" in
      /*) [ -e "$cmd" ] || out="$out $pkg" ;;
      *) command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || out="$out $pkg" ;;
    esac
  done
  echo "$out"
}

missing=$(missing_pkgs)
case "${1:-check}" in
  check)
    if [ -n "$missing" ]; then
      echo "missing system packages:$missing" >&2
      echo "install them with:  sudo apt-get update && sudo apt-get install -y$missing" >&2
      echo "(or run: make system-deps)" >&2
      exit 1
    fi
    ;;
  install)
    [ -z "$missing" ] && exit 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "missing system packages:$missing" >&2
      echo "install them with:  sudo apt-get update && sudo apt-get install -y$missing" >&2
      exit 1
    fi
    echo "installing system packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
    ;;
  *)
    echo "usage: $0 check|install" >&2
    exit 2
    ;;
esac
