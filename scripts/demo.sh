#!/usr/bin/env bash
# A complete tour in a temporary directory: state key, throwaway CA,
# manufacture, inspect, verify, key rotation, verify again.
set -euo pipefail
bin=$(realpath "${1:-bin/vtpm-mfg}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"

step() { printf '\n$ %s\n' "$*"; "$@"; }

echo "working in $dir (removed at the end)"
step "$bin" key generate -o state.key
step "$bin" ca init --out-cert ca.pem --out-key ca.key --subject "vtpm-mfg demo EK CA"
step "$bin" manufacture --key-file state.key --ca-cert ca.pem --ca-key ca.key -o state.img --cert-dir certs
step "$bin" inspect --state state.img --key-file state.key
step "$bin" verify --state state.img --key-file state.key --ca-cert ca.pem
step "$bin" key generate -o new.key
step "$bin" rotate-key --state state.img --key-file state.key --new-key-file new.key
step "$bin" verify --state state.img --key-file new.key --ca-cert ca.pem
printf '\n$ %s\n' "$bin verify --state state.img --key-file state.key --ca-cert ca.pem   # the old key no longer opens it"
if "$bin" verify --state state.img --key-file state.key --ca-cert ca.pem; then
	echo "unexpected: the old key still opens the image" >&2
	exit 1
fi
echo
echo "demo complete: state.img ($(du -h --apparent-size state.img | cut -f1), sparse) holds a TPM with RSA and ECC EK certificates, now under new.key"
