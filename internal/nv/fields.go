package nv

import (
	"encoding/hex"
	"fmt"
)

// FieldValue is one decoded field of a fixed region.
type FieldValue struct {
	Region string `json:"region"`
	Name   string `json:"name"`
	Offset int    `json:"offset"`
	Size   int    `json:"size"`
	// Uint holds integer fields.
	Uint *uint64 `json:"uint,omitempty"`
	// Hex holds byte fields and the used part of TPM2B fields.
	Hex string `json:"hex,omitempty"`
	// Len is the size field of a TPM2B.
	Len *int `json:"tpm2b_size,omitempty"`
	// Fingerprint replaces the value of secrets.
	Fingerprint string `json:"fingerprint,omitempty"`
}

func (v FieldValue) String() string {
	switch {
	case v.Fingerprint != "" && v.Len != nil:
		return fmt.Sprintf("secret, size %d, fingerprint %s", *v.Len, v.Fingerprint)
	case v.Fingerprint != "":
		return "secret, fingerprint " + v.Fingerprint
	case v.Uint != nil:
		return fmt.Sprintf("%d (0x%x)", *v.Uint, *v.Uint)
	case v.Len != nil:
		return fmt.Sprintf("size %d %s", *v.Len, v.Hex)
	}
	return v.Hex
}

// Fields decodes every field of every fixed region by its kind. Secrets
// (seeds, proofs, auth values, DRBG state) are given as fingerprints only.
func (im *Image) Fields() []FieldValue {
	var out []FieldValue
	for _, r := range im.Profile.Regions {
		for _, f := range r.Fields {
			b := im.Fixed[r.Off+f.Off : r.Off+f.Off+f.Size]
			v := FieldValue{Region: r.Name, Name: f.Name, Offset: r.Off + f.Off, Size: f.Size}
			switch f.Kind {
			case U8, U16, U32, U64:
				var x uint64
				for i := f.Size - 1; i >= 0; i-- {
					x = x<<8 | uint64(b[i])
				}
				v.Uint = &x
			case TPM2B:
				n := int(le.Uint16(b))
				v.Len = &n
				if n <= len(b)-2 {
					v.Hex = hex.EncodeToString(b[2 : 2+n])
				}
			case Auth, Seed:
				n := int(le.Uint16(b))
				v.Len = &n
				if n == 0 {
					v.Hex = "(empty)"
				} else if n <= len(b)-2 {
					v.Fingerprint = Fingerprint(b[2 : 2+n])
				} else {
					v.Fingerprint = "(invalid size)"
				}
			case Secret:
				v.Fingerprint = Fingerprint(b)
			default:
				v.Hex = hex.EncodeToString(b)
			}
			out = append(out, v)
		}
	}
	return out
}
