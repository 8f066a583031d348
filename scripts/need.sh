#!/usr/bin/env bash
# need.sh COMMAND PACKAGE: makes sure COMMAND (or, when it starts with /, that file) exists,
# installing PACKAGE when it does not.
# PACKAGE is a Debian package name (installed when running as root, else the exact command to
# run is printed), or pip:NAME==VERSION for a PyPI tool. Used by the Makefile and bench/run.sh.
set -euo pipefail
cmd=$1 pkg=$2
# A COMMAND starting with / is a file the package provides (a library, say).
if [ "${cmd#/}" != "$cmd" ]; then [ -e "$cmd" ] && exit 0; else command -v "$cmd" >/dev/null 2>&1 && exit 0; fi
case "$pkg" in
pip:*)
    echo "installing ${pkg#pip:} (for $cmd)"
    python3 -m pip install -q --disable-pip-version-check "${pkg#pip:}"
    # Under pyenv a new console script needs its shim.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    command -v "$cmd" >/dev/null 2>&1 || { echo "installed ${pkg#pip:} but $cmd is not on PATH" >&2; exit 1; }
    exit 0
    ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "missing $cmd: install it with: sudo apt-get install $pkg" >&2
    exit 1
fi
echo "installing $pkg (for $cmd)"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
# Debian starts a packaged nginx on port 80; plughost's bench runs its own. Likewise the
# packaged Redis service: the tests start private ones.
if [ "$pkg" = nginx-light ]; then
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
fi
if [ "$pkg" = redis-server ]; then
    systemctl stop redis-server 2>/dev/null || true
fi
