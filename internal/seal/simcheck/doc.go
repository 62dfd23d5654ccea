// Package simcheck cross-checks package seal against an independent TPM
// engine, the go-tpm-tools simulator (cgo and OpenSSL headers): objects
// sealed offline load under the parent the simulator creates, and unseal
// in a policy session. It has tests only.
package simcheck
