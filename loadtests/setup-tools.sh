#!/bin/sh
# Install the benchmark's tools when missing: nginx (nginx-light), wrk and hey (Debian/Ubuntu).
# Usage: sh loadtests/setup-tools.sh   (as root, or with sudo available)
set -eu

missing=""
command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v hey >/dev/null 2>&1 || missing="$missing hey"

if [ -z "$missing" ]; then
    echo "nginx, wrk and hey are installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing:$missing; install them with your package manager (apt-get not found)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "installing:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
