#!/usr/bin/env bash
# Debian packages the tests and the demo use to make phone audio offline: TTS voices, sox, and the
# Asterisk prompt and hold-music recordings (CC-BY-SA); PostgreSQL, which the store tests start as a
# throwaway server (initdb + pg_ctl). Installs only what is missing.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v sox >/dev/null || need+=(sox libsox-fmt-all)
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || need+=(asterisk-core-sounds-en-wav)
[ -d /usr/share/asterisk/moh ] || need+=(asterisk-moh-opsound-wav)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "error: need root to apt-get install ${need[*]}" >&2; exit 1; fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
