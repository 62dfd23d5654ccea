// Package attest predicts and checks what upstream COCONUT-SVSM's
// attestation protocol (SVSM protocol 1) reports about the vTPM: the vTPM
// service manifest, which is the TPMT_PUBLIC of the EK the TPM creates for
// the TCG L-1 template, and the SEV-SNP attestation report whose
// REPORT_DATA binds it (SHA-512 of the guest's 64-byte nonce followed by
// the manifest, or by the table of all services). Report parsing and the
// AMD signature chain are go-sev-guest's.
package attest

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/uuid"
)

// The service GUIDs of upstream SVSM's attest protocol.
var (
	// VTPMGUID names the vTPM service (SVSM_ATTEST_SINGLE_SERVICE).
	VTPMGUID = uuid.MustParse("c476f1eb-0123-45a5-9641-b4e7dde5bfe3")
	// ServicesGUID heads the table SVSM_ATTEST_SERVICES returns.
	ServicesGUID = uuid.MustParse("63849ebb-3d92-4670-a1ff-58f9c94b87bb")
	// UEFIMMGUID names the UEFI MM (variable store) service.
	UEFIMMGUID = uuid.MustParse("a4453a59-9e1b-4787-a033-1986d6adbe55")
)

const (
	// NonceSize is the size of the nonce the SVSM takes (exactly).
	NonceSize = 64
	// ManifestVersion is the only vTPM manifest version the SVSM serves.
	ManifestVersion = 0
	// tableHeaderSize and tableEntrySize are the sizes of the services
	// table header (GUID, total length u32 LE, entry count u32 LE) and of
	// each entry (GUID, offset from the table start u32 LE, size u32 LE).
	tableHeaderSize = 24
	tableEntrySize  = 24
)

// GUIDBytes encodes a GUID as the SVSM reads it from guest memory: the
// first three fields little-endian, the last two as they are.
func GUIDBytes(g uuid.UUID) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:4], binary.BigEndian.Uint32(g[0:4]))
	binary.LittleEndian.PutUint16(b[4:6], binary.BigEndian.Uint16(g[4:6]))
	binary.LittleEndian.PutUint16(b[6:8], binary.BigEndian.Uint16(g[6:8]))
	copy(b[8:], g[8:])
	return b
}

// parseGUID decodes 16 mixed-endian bytes.
func parseGUID(b []byte) uuid.UUID {
	var g uuid.UUID
	binary.BigEndian.PutUint32(g[0:4], binary.LittleEndian.Uint32(b[0:4]))
	binary.BigEndian.PutUint16(g[4:6], binary.LittleEndian.Uint16(b[4:6]))
	binary.BigEndian.PutUint16(g[6:8], binary.LittleEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:16])
	return g
}

// VTPMManifest is the vTPM service manifest for an EK public area: the
// marshaled TPMT_PUBLIC, without the TPM2B size field (the SVSM returns
// TPM2_CreatePrimary's outPublic from after its size).
func VTPMManifest(pub tpm2.TPMTPublic) []byte {
	return tpm2.Marshal(pub)
}

// ManifestForRSAKey is the vTPM manifest of the TPM whose L-1 EK (the
// SVSM's DEFAULT_PUBLIC_AREA) has this public key: the L-1 template with
// the key's modulus as its unique field.
func ManifestForRSAKey(k *rsa.PublicKey) ([]byte, error) {
	if k.N.BitLen() != 2048 || k.E != 65537 {
		return nil, fmt.Errorf("the key is RSA-%d with exponent %d; the SVSM's vTPM manifest is an RSA-2048 EK with exponent 65537 (template L-1)", k.N.BitLen(), k.E)
	}
	pub := tpm2.RSAEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
	return VTPMManifest(pub), nil
}

// Digest is the SHA-512 of a manifest, as REPORT_DATA uses it.
func Digest(b []byte) [64]byte { return sha512.Sum512(b) }

// ReportData is what the SVSM puts into REPORT_DATA: SHA-512(nonce ||
// manifest), the manifest being the vTPM's or the services table.
func ReportData(nonce, manifest []byte) [64]byte {
	h := sha512.New()
	h.Write(nonce)
	h.Write(manifest)
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Service is one entry of the services table.
type Service struct {
	GUID uuid.UUID
	Data []byte
}

// IsServicesTable tells a services table (SVSM_ATTEST_SERVICES) from a
// single service's manifest by its header GUID.
func IsServicesTable(b []byte) bool {
	return len(b) >= 16 && bytes.Equal(b[:16], GUIDBytes(ServicesGUID))
}

// BuildServices lays out a services table: the header, one entry per
// service, then the blobs in the same order (the SVSM puts the vTPM's
// first).
func BuildServices(svcs []Service) []byte {
	n := tableHeaderSize + tableEntrySize*len(svcs)
	total := n
	for _, s := range svcs {
		total += len(s.Data)
	}
	b := make([]byte, total)
	copy(b[0:16], GUIDBytes(ServicesGUID))
	binary.LittleEndian.PutUint32(b[16:20], uint32(total))
	binary.LittleEndian.PutUint32(b[20:24], uint32(len(svcs)))
	off := n
	for i, s := range svcs {
		e := b[tableHeaderSize+tableEntrySize*i:]
		copy(e[0:16], GUIDBytes(s.GUID))
		binary.LittleEndian.PutUint32(e[16:20], uint32(off))
		binary.LittleEndian.PutUint32(e[20:24], uint32(len(s.Data)))
		copy(b[off:], s.Data)
		off += len(s.Data)
	}
	return b
}

// ParseServices reads a services table, checking that its length field
// is the table's size and that every blob lies inside it, after the
// entries.
func ParseServices(b []byte) ([]Service, error) {
	if len(b) < tableHeaderSize || !IsServicesTable(b) {
		return nil, fmt.Errorf("not a services table (it does not start with GUID %s)", ServicesGUID)
	}
	total := binary.LittleEndian.Uint32(b[16:20])
	count := binary.LittleEndian.Uint32(b[20:24])
	if uint64(total) != uint64(len(b)) {
		return nil, fmt.Errorf("services table: the header says %d bytes, the file has %d", total, len(b))
	}
	end := uint64(tableHeaderSize) + uint64(tableEntrySize)*uint64(count)
	if end > uint64(len(b)) {
		return nil, fmt.Errorf("services table: %d entries do not fit in %d bytes", count, len(b))
	}
	var out []Service
	for i := uint64(0); i < uint64(count); i++ {
		e := b[tableHeaderSize+tableEntrySize*i:]
		off, size := uint64(binary.LittleEndian.Uint32(e[16:20])), uint64(binary.LittleEndian.Uint32(e[20:24]))
		if off < end || off+size > uint64(len(b)) {
			return nil, fmt.Errorf("services table: entry %d (%s) points at bytes %d..%d, outside the blobs (%d..%d)", i, parseGUID(e[0:16]), off, off+size, end, len(b))
		}
		out = append(out, Service{GUID: parseGUID(e[0:16]), Data: b[off : off+size]})
	}
	return out, nil
}
