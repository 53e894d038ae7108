#!/usr/bin/env bash
# System libraries the Python packages cannot bring: EGL (Mesa) for headless MuJoCo rendering.
# Installs them with apt-get only where missing and only when running as root; otherwise says what to do.
set -euo pipefail
missing=()
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=(libegl1)
ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0' || missing+=(libegl-mesa0)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || missing+=(libgl1)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "w2a: missing system packages for headless rendering: ${missing[*]} (install them with apt-get)" >&2
  exit 1
fi
