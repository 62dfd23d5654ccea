package main

import (
	"crypto/sha256"
	"encoding/hex"
)

func sha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// upstreamKBSResource is the key broker resource upstream SVSM's
// attestation proxy asks for (hard-coded there).
const upstreamKBSResource = "default/sample/test"
