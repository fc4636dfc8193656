#!/usr/bin/env bash
# Installs the browser the web tests drive: Debian's chromium (never a browser download
# from a test tool). Idempotent: does nothing when the browser is already there.
#   scripts/install-browser.sh          # as root, or with sudo available
# CHROMIUM (default /usr/bin/chromium) names the binary to look for.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: $CHROMIUM is missing and there is no apt-get here; install Chromium by hand," >&2
  echo "  point WEB_CHROMIUM at it, or set WEB_TESTS=skip to skip the browser tests." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-browser: need root (or sudo) to apt-get install chromium" >&2
    exit 1
  fi
fi
echo "install-browser: installing Debian's chromium" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
"$CHROMIUM" --version >&2
