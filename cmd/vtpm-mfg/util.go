package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
)

// sha256File hashes the first file of paths, or data if paths is empty.
func sha256File(paths []string, data []byte) string {
	h := sha256.New()
	if len(paths) == 0 {
		h.Write(data)
	} else {
		f, err := os.Open(paths[0])
		if err != nil {
			return ""
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return ""
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
