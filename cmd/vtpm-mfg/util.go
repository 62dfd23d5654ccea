package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

func sha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// upstreamKBSResource is the key broker resource upstream SVSM's
// attestation proxy asks for (hard-coded there).
const upstreamKBSResource = "default/sample/test"

// shellQuote quotes a path for a shell command line.
func shellQuote(s string) string {
	for _, r := range s {
		if !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
