#!/usr/bin/env bash
# A complete tour in a temporary directory, for both SVSM lines: state key,
# throwaway CA, manufacture, inspect, verify, key rotation, verify again.
set -euo pipefail
bin=$(realpath "${1:-bin/vtpm-mfg}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"

step() { printf '\n$ %s\n' "$*"; "$@"; }

echo "working in $dir (removed at the end)"
step "$bin" ca init --out-cert ca.pem --out-key ca.key --subject "vtpm-mfg demo EK CA"

tour() {
	local profile=$1 img=$2
	printf '\n=== %s ===\n' "$profile"
	step "$bin" key generate -o "$img.key"
	step "$bin" manufacture --profile "$profile" --key-file "$img.key" --ca-cert ca.pem --ca-key ca.key -o "$img" --cert-dir "certs-$profile"
	step "$bin" inspect --state "$img" --key-file "$img.key"
	step "$bin" verify --state "$img" --key-file "$img.key" --ca-cert ca.pem
	step "$bin" key generate -o "$img.new-key"
	step "$bin" rotate-key --state "$img" --key-file "$img.key" --new-key-file "$img.new-key"
	step "$bin" verify --state "$img" --key-file "$img.new-key" --ca-cert ca.pem
	printf '\n$ %s\n' "$bin verify --state $img --key-file $img.key --ca-cert ca.pem   # the old key no longer opens it"
	if "$bin" verify --state "$img" --key-file "$img.key" --ca-cert ca.pem; then
		echo "unexpected: the old key still opens $img" >&2
		exit 1
	fi
}

tour svsm-poc poc-state.img
tour svsm-2026 upstream-state.img
step "$bin" key kbs --key-file upstream-state.img.new-key --json

echo
echo "demo complete:"
echo "  poc-state.img      ($(du -h --apparent-size poc-state.img | cut -f1), BlockFS, sparse) for the SVSM proof of concept"
echo "  upstream-state.img ($(du -h --apparent-size upstream-state.img | cut -f1), CocoonFS) for upstream SVSM"
echo "both hold a TPM with RSA and ECC EK certificates, now under their new keys"
