package nv

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// In the OBJECT's TPMU_PUBLIC_PARMS (both RSA and ECC) the scheme is a
// TPMT_*_SCHEME at offset 6: the selector (u16) at 6 and the details
// union (TPMU_ASYM_SCHEME, 4 bytes: every signing scheme's details start
// with hashAlg, ECDAA adds count) at 8; integers little-endian as the
// build stores them. Zeros where the scheme has no details (NULL).
const (
	parmScheme     = 6
	parmSchemeHash = 8
)

// putSigScheme stores a marshaled TPMT_RSA_SCHEME/TPMT_ECC_SCHEME: NULL,
// or one of the signing schemes RSASSA, RSAPSS, ECDSA (details
// TPMS_SCHEME_HASH).
func putSigScheme(pp []byte, marshaled []byte) error {
	le := binary.LittleEndian
	scheme := tpm2.TPMAlgNull
	if len(marshaled) >= 2 {
		scheme = tpm2.TPMAlgID(binary.BigEndian.Uint16(marshaled))
	}
	switch scheme {
	case 0, tpm2.TPMAlgNull:
		le.PutUint16(pp[parmScheme:], uint16(tpm2.TPMAlgNull))
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS, tpm2.TPMAlgECDSA:
		if len(marshaled) < 4 {
			return fmt.Errorf("scheme 0x%04x without a hash algorithm", uint16(scheme))
		}
		le.PutUint16(pp[parmScheme:], uint16(scheme))
		le.PutUint16(pp[parmSchemeHash:], binary.BigEndian.Uint16(marshaled[2:]))
	default:
		return fmt.Errorf("persisting keys with scheme 0x%04x is not supported (NULL or a hash-only signing scheme)", uint16(scheme))
	}
	return nil
}

func schemeAt(pp []byte) (tpm2.TPMAlgID, tpm2.TPMIAlgHash) {
	le := binary.LittleEndian
	return tpm2.TPMAlgID(le.Uint16(pp[parmScheme:])), tpm2.TPMIAlgHash(le.Uint16(pp[parmSchemeHash:]))
}

func rsaSchemeAt(pp []byte) tpm2.TPMTRSAScheme {
	s, h := schemeAt(pp)
	switch s {
	case tpm2.TPMAlgRSASSA:
		return tpm2.TPMTRSAScheme{Scheme: s, Details: tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeRSASSA{HashAlg: h})}
	case tpm2.TPMAlgRSAPSS:
		return tpm2.TPMTRSAScheme{Scheme: s, Details: tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: h})}
	}
	return tpm2.TPMTRSAScheme{Scheme: tpm2.TPMIAlgRSAScheme(s)}
}

func eccSchemeAt(pp []byte) tpm2.TPMTECCScheme {
	s, h := schemeAt(pp)
	switch s {
	case tpm2.TPMAlgECDSA:
		return tpm2.TPMTECCScheme{Scheme: s, Details: tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeECDSA{HashAlg: h})}
	}
	return tpm2.TPMTECCScheme{Scheme: tpm2.TPMIAlgECCScheme(s)}
}
