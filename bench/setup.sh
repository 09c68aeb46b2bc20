#!/usr/bin/env bash
# Install what the HTTP load benchmark needs: Debian's nginx (with the WebDAV
# module, for PUT) and wrk. Idempotent; run as root. Does nothing when both are
# already there; otherwise it first prints what it installs and why.
set -euo pipefail

have_dav_nginx() {
    command -v nginx >/dev/null 2>&1 && nginx -V 2>&1 | grep -q -- 'http_dav_module'
}

need=()
have_dav_nginx || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)

if [ ${#need[@]} -eq 0 ]; then
    echo "bench/setup.sh: nginx (dav) and wrk already installed"
    exit 0
fi

# Say what is installed and why before touching the system.
echo "bench/setup.sh: the HTTP load benchmark (bench/load.py) needs system packages:"
for pkg in "${need[@]}"; do
    case "$pkg" in
        nginx-light) echo "  nginx-light: nginx with the WebDAV module, the reference server" \
                          "every row compares our node with (PUT needs WebDAV)" ;;
        wrk) echo "  wrk: the HTTP client that drives the GET rows" ;;
    esac
done
echo "  installing them with: apt-get install --no-install-recommends ${need[*]}" \
     "(the package's own nginx service is kept from starting)"

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: need root to install: ${need[*]}" >&2
    exit 1
fi

# The package must not start a system nginx on port 80: the benchmark runs its
# own instance from a temp dir. A policy-rc.d that says "101" blocks service
# starts during the install; only add (and remove) one if none is there.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
fi
cleanup() { if [ "$added_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

have_dav_nginx || { echo "bench/setup.sh: installed nginx lacks http_dav_module" >&2; exit 1; }
command -v wrk >/dev/null 2>&1 || { echo "bench/setup.sh: wrk missing after install" >&2; exit 1; }
echo "bench/setup.sh: installed ${need[*]}"
