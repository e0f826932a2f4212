#!/usr/bin/env bash
# Installs what fwsiem needs on a fresh Debian/Ubuntu machine (idempotent): a JDK 17 and Maven for
# the local engines, docker-compose to validate the compose file, Chromium for the report test,
# then a virtualenv in .venv with fwsiem and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
# The syslog daemons SOCs already run, for the shipping tests (docs/shipping.md).
command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so ] || need+=(rsyslog-elasticsearch)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "bootstrap: please install: ${need[*]}" >&2
  fi
fi

# syslog-ng and rsyslog conflict as Debian packages (both are the system log daemon), so with
# rsyslog installed, Debian's syslog-ng packages are unpacked into .fwsiem/tools/syslog-ng and
# run from there by the tests; their libraries are installed normally.
SYSLOG_NG=.fwsiem/tools/syslog-ng
if ! command -v syslog-ng >/dev/null 2>&1 && [ ! -x "$SYSLOG_NG/usr/sbin/syslog-ng" ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: unpacking Debian's syslog-ng into $SYSLOG_NG" >&2
  export DEBIAN_FRONTEND=noninteractive
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq
  apt-get install -y -qq --no-install-recommends libivykis0 libnet1 libjson-c5 libglib2.0-0 \
    libpcre3 libwrap0 libcurl4 libcap2 >/dev/null
  debs=$(mktemp -d) && chmod 777 "$debs"
  (cd "$debs" && apt-get download -qq syslog-ng-core syslog-ng-mod-http syslog-ng-scl 2>/dev/null)
  mkdir -p "$SYSLOG_NG"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$SYSLOG_NG"; done
  rm -rf "$debs"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "bootstrap: ready ($(.venv/bin/fwsiem --version))" >&2
