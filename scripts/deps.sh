#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing pipegate need, and only the ones
# that are missing. A machine that already has everything installs nothing and needs no network.
#
# Usage: scripts/deps.sh            (as root, or as a user who may run sudo)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential
  cmake
  pkg-config
  libuv1-dev
  libssl-dev
  libgtest-dev
  libgmock-dev
  googletest
  libtomlplusplus-dev
  libcli11-dev
  libfmt-dev
  nlohmann-json3-dev
  openssl
  clang
  gcovr
  libclang-rt-14-dev
  # sd_notify readiness for the systemd unit (Type=notify).
  libsystemd-dev
  # Operations: man pages from docs/man/*.scd, the .deb (dpkg-shlibdeps), deploy/ checks (YAML),
  # the container-to-host test (ip netns, veth, unshare).
  scdoc
  dpkg-dev
  python3-yaml
  iproute2
  util-linux
  man-db
  # The conformance suite (tests/conformance/): its runner and the unmodified client programs
  # and servers it compares a local pipe with pipegate through.
  python3
  socat
  redis-server
  redis-tools
  postgresql
  postgresql-client
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps.sh: dpkg-query not found; this script is for Debian 12 (install the equivalent of:" \
    "${PACKAGES[*]})" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  # "installed" only; half-installed or config-files states count as missing.
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ $status != installed ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps.sh: all ${#PACKAGES[@]} build dependencies are installed"
  exit 0
fi

echo "deps.sh: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo --preserve-env=DEBIAN_FRONTEND)
  else
    echo "deps.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
