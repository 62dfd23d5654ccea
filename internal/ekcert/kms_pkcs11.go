//go:build pkcs11 && cgo

package ekcert

// A build with -tags pkcs11 (and cgo) accepts pkcs11: URIs for the CA key,
// e.g. --ca-key 'pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=ca;object=ek-ca?pin-source=/run/pin'.
import _ "go.step.sm/crypto/kms/pkcs11"
