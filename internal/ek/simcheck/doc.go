// Package simcheck cross-checks package ek against an independent TPM
// engine, the go-tpm-tools simulator (which needs cgo and OpenSSL headers).
// It has tests only.
package simcheck
