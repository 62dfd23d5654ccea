#!/usr/bin/env bash
# Runs the whole test suite. The EK cross-check against the go-tpm-tools
# simulator needs a C compiler and OpenSSL headers; they are installed from
# Debian's packages when missing and we are allowed to (root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! echo '#include <openssl/evp.h>' | cc -E -x c - >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing libssl-dev for the TPM simulator cross-check" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >/dev/null
	else
		echo "OpenSSL headers missing: install libssl-dev (the simulator cross-check needs them)" >&2
		exit 1
	fi
fi

if [ -z "${VTPM_MFG_SHARED:-}" ] && [ ! -d ../shared ]; then
	echo "note: reference vectors not found (../shared, or set VTPM_MFG_SHARED): comparisons with them are skipped" >&2
fi

# The PKCS#11 path (CA keys in a token) runs against SoftHSM.
if ! command -v softhsm2-util >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing softhsm2 for the PKCS#11 CA test" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
	else
		echo "note: softhsm2 missing: the PKCS#11 CA test skips" >&2
	fi
fi

# luks enroll/check drive the cryptsetup binary on LUKS2 image files.
if ! command -v cryptsetup >/dev/null && [ ! -x /usr/sbin/cryptsetup ] && [ ! -x /sbin/cryptsetup ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing cryptsetup-bin for the LUKS2 tests" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cryptsetup-bin >/dev/null
	else
		echo "note: cryptsetup missing: the LUKS2 tests skip" >&2
	fi
fi
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac

go vet ./...
go vet -tags pkcs11 ./...
go test -count=1 ./...
go test -count=1 -tags pkcs11 -run 'PKCS11' ./cmd/vtpm-mfg/
