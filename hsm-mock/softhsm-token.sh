#!/bin/sh
# Creates a throwaway SoftHSM2 token in DIR, to try the PKCS#11 path locally, and prints the settings to use.
# Usage: hsm-mock/softhsm-token.sh DIR [LABEL] [PIN]     (LABEL defaults to "kms"; PIN to a random one)
# softhsm2-util takes PINs only on its command line, visible in the process list: fine for a throwaway token,
# never for one that guards real keys.
set -eu

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DIR [LABEL] [PIN]" >&2
  exit 2
fi
random_pin() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
label=${2:-kms}
pin=${3:-$(random_pin)}
so_pin=$(random_pin)

module=
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  if [ -e "$candidate" ]; then module=$candidate; break; fi
done
if [ -z "$module" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "$0: SoftHSM2 not installed (apt-get install softhsm2)" >&2
  exit 1
fi

mkdir -p "$1/tokens"
chmod 700 "$1/tokens"
dir=$(cd "$1" && pwd)   # SoftHSM resolves a relative tokendir against the current directory: make it absolute
conf="$dir/softhsm2.conf"
umask 077
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/tokens" >"$conf"

SOFTHSM2_CONF=$conf softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >&2

cat <<EOF
export SOFTHSM2_CONF='$conf'
# PKCS#11 module: $module
# token label:    $label
# user PIN:       $pin
# SO PIN:         $so_pin
EOF
