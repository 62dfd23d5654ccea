// Package keyfile reads the 64-byte SVSM state key from a file, standard
// input or an environment variable, and formats it for key brokers. Key
// bytes never appear in errors.
package keyfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vtpm-mfg/vtpm-mfg/internal/input"
)

// Size is the length of a state key.
const Size = 64

const forms = "accepted forms: 64 raw bytes, or 128 hex characters (surrounding white space is ignored)"

// Parse decodes a key in one of the accepted forms. name identifies the
// source in error messages.
func Parse(name string, data []byte) ([]byte, error) {
	if len(data) == Size && !isHex(data) {
		k := make([]byte, Size)
		copy(k, data)
		return k, nil
	}
	t := bytes.TrimSpace(data)
	switch {
	case len(t) == 2*Size && isHex(t):
		k := make([]byte, Size)
		if _, err := hex.Decode(k, t); err != nil {
			return nil, fmt.Errorf("%s: not a valid key (%s)", name, forms)
		}
		return k, nil
	case len(t) == Size && isHex(t):
		return nil, fmt.Errorf("%s: holds 64 hex characters, a 32-byte key; the SVSM needs a 64-byte key (%s)", name, forms)
	case len(t) == 0:
		return nil, fmt.Errorf("%s: empty, no key (%s)", name, forms)
	case isHex(t):
		return nil, fmt.Errorf("%s: %d hex characters, a %d-byte key; the SVSM needs a 64-byte key (%s)", name, len(t), len(t)/2, forms)
	default:
		return nil, fmt.Errorf("%s: not a key: %d bytes that are neither 64 raw bytes nor 128 hex characters (%s)", name, len(data), forms)
	}
}

func isHex(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Source says where a key comes from: a file path ("-" for stdin) or an
// environment variable.
type Source struct {
	File string
	Env  string
}

// ErrNoSource is returned when neither a file nor a variable was named.
var ErrNoSource = errors.New("no key given")

// Load reads and parses the key. stdin is used for File == "-".
func (s Source) Load(stdin io.Reader) ([]byte, error) {
	switch {
	case s.File != "" && s.Env != "":
		return nil, errors.New("give the key either as a file or as an environment variable, not both")
	case s.File == "-":
		data, err := io.ReadAll(io.LimitReader(stdin, 4096))
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		return Parse("standard input", data)
	case s.File != "":
		data, err := input.ReadFile(s.File, "key file", 4096)
		if err != nil {
			return nil, err
		}
		defer Wipe(data)
		return Parse(s.File, data)
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return nil, fmt.Errorf("environment variable %s is not set", s.Env)
		}
		return Parse("environment variable "+s.Env, []byte(v))
	}
	return nil, ErrNoSource
}

// BrokerForms holds the representations key brokers expect.
type BrokerForms struct {
	Hex    string `json:"hex"`
	Base64 string `json:"base64"`
}

// Forms returns the hex and base64 forms of a key.
func Forms(key []byte) BrokerForms {
	return BrokerForms{Hex: hex.EncodeToString(key), Base64: base64.StdEncoding.EncodeToString(key)}
}

// Wipe overwrites key material that is no longer needed.
func Wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// Fingerprint identifies a key without revealing it: "sha256:" and the
// first 16 bytes of SHA-256 of the raw key, in hex. key kbs and inspect
// print it, so that an image's key can be matched with the one a broker
// holds.
func Fingerprint(key []byte) string {
	s := sha256.Sum256(key)
	return "sha256:" + hex.EncodeToString(s[:16])
}
