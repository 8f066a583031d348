#!/usr/bin/env bash
# need.sh COMMAND DEBIAN_PACKAGE: makes sure COMMAND exists, installing the Debian package when
# running as root, else saying exactly what to install. Used by the Makefile and bench/run.sh.
set -euo pipefail
cmd=$1 pkg=$2
command -v "$cmd" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing $cmd: install it with: sudo apt-get install $pkg" >&2
    exit 1
fi
echo "installing $pkg (for $cmd)"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
# Debian starts a packaged nginx on port 80; plughost's bench runs its own.
if [ "$pkg" = nginx-light ]; then
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi
