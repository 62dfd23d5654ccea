package pipeline

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/nv"
)

// Persistent handles of TCG Provisioning Guidance: the EKs at
// 0x81010001 (RSA) and 0x81010002 (ECC), the storage root key at
// 0x81000001. The guidance assigns no handle to the high-range EKs.
var ekHandles = map[ek.Alg]uint32{ek.RSA2048: 0x81010001, ek.ECCP256: 0x81010002}

// SRKHandle is where systemd and TCG guidance expect the storage root key.
const SRKHandle = 0x81000001

// EKHandle returns the persistent handle of an EK type.
func EKHandle(alg ek.Alg) (uint32, error) {
	if h, ok := ekHandles[alg]; ok {
		return h, nil
	}
	return 0, fmt.Errorf("%s: TCG Provisioning Guidance assigns no persistent handle to this EK (only L-1 RSA 0x81010001 and L-2 ECC 0x81010002); persist only those", ekName(alg))
}

// ParsePersist reads a --persist list: "ek" (every certified EK that TCG
// Provisioning Guidance gives a handle: L-1 and L-2), EK names (L-1,
// rsa2048, ...) and "srk". certified are the EKs being certified. Notes
// say which certified EKs "ek" leaves out, and why. A named EK without a
// handle, or one not certified, is an error naming it.
func ParsePersist(s string, certified []ek.Alg) (p Persist, notes []string, err error) {
	add := func(a ek.Alg) {
		if !slices.Contains(p.EKs, a) {
			p.EKs = append(p.EKs, a)
		}
	}
	for _, f := range strings.Split(s, ",") {
		switch f = strings.TrimSpace(f); strings.ToLower(f) {
		case "":
		case "srk":
			p.SRK = true
		case "ek":
			for _, a := range certified {
				if _, herr := EKHandle(a); herr == nil {
					add(a)
				} else {
					notes = append(notes, fmt.Sprintf("%s is certified but not persisted: TCG Provisioning Guidance assigns it no persistent handle", ekName(a)))
				}
			}
		default:
			a, perr := ek.ParseAlg(f)
			if perr != nil {
				return p, nil, fmt.Errorf("%q is neither ek, srk nor an EK type (%v)", f, perr)
			}
			if _, herr := EKHandle(a); herr != nil {
				return p, nil, herr
			}
			if !slices.Contains(certified, a) {
				return p, nil, fmt.Errorf("%s is not among the EKs to certify; add it to --ek, or persist another", ekName(a))
			}
			add(a)
		}
	}
	return p, notes, nil
}

// ekName is an EK type's template name with its alias: "H-3 (ecc-p384)".
func ekName(alg ek.Alg) string {
	if t := ek.EKOf(alg); t != nil {
		return t.ID + " (" + string(alg) + ")"
	}
	return string(alg)
}

// SRKTemplate is the storage root key template systemd creates at
// 0x81000001 (systemd-tpm2-setup, tpm2-util.c): ECC NIST P-256 with
// SHA-256, restricted decrypt, fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, noDA, AES-128-CFB, no scheme, no KDF,
// unique empty (objectAttributes 0x00030472).
func SRKTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			NoDA: true, Restricted: true, Decrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES,
				KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// objectSpec turns a derived primary key into the object the TPM
// persists: a primary key of hierarchy h, its authValue the empty one
// padded to the nameAlg digest, its qualified name
// nameAlg || H(h || Name), as TPM2_CreatePrimary then TPM2_EvictControl
// leave it.
func objectSpec(k *ek.Key, handle, hierarchy uint32, seedValue []byte) (nv.ObjectSpec, error) {
	h, err := ek.NameHash(k.Public.NameAlg)
	if err != nil {
		return nv.ObjectSpec{}, err
	}
	qh := h.New()
	qh.Write(binary.BigEndian.AppendUint32(nil, hierarchy))
	qh.Write(k.Name)
	qname := append(binary.BigEndian.AppendUint16(nil, uint16(k.Public.NameAlg)), qh.Sum(nil)...)
	attrs := uint32(nv.ObjEvict | nv.ObjPrimary | nv.ObjOccupied)
	if hierarchy == nv.RHEndorsement {
		attrs |= nv.ObjEPSHierarchy
	} else {
		attrs |= nv.ObjSPSHierarchy
	}
	if k.Public.ObjectAttributes.Restricted && k.Public.ObjectAttributes.Decrypt {
		attrs |= nv.ObjIsParent
	}
	o := nv.ObjectSpec{Handle: handle, Attributes: attrs, Public: k.Public, AuthValue: make([]byte, h.Size()),
		SeedValue: seedValue, Name: k.Name, QName: qname, Hierarchy: hierarchy}
	if k.Public.Type == tpm2.TPMAlgRSA {
		if o.Private, err = k.RSAPrivate(); err != nil {
			return o, err
		}
	} else {
		o.Private = k.ECCPrivate
	}
	return o, nil
}

// PersistEK makes the image's EK of type alg persistent at its TCG
// handle, as TPM2_CreatePrimary plus TPM2_EvictControl would.
func PersistEK(im *nv.Image, alg ek.Alg) (uint32, error) {
	handle, err := EKHandle(alg)
	if err != nil {
		return 0, err
	}
	k, err := DeriveEK(im, alg)
	if err != nil {
		return 0, err
	}
	seed := k.SeedValue(im.TPM2B("shProof"), im.TPM2B("ehProof"))
	o, err := objectSpec(k, handle, nv.RHEndorsement, seed)
	if err != nil {
		return 0, err
	}
	return handle, im.AddPersistent(o)
}

// DeriveSRK derives the storage root key (SRKTemplate) from the image's
// storage primary seed.
func DeriveSRK(im *nv.Image) (*ek.Key, error) {
	return fromSeed(im, "SPSeed", func(sps []byte, mode ek.CandidateMode) (*ek.Key, error) {
		return ek.DeriveTemplate(sps, SRKTemplate(), mode, nil)
	})
}

// PersistSRK makes the storage root key persistent at 0x81000001.
func PersistSRK(im *nv.Image) (uint32, error) {
	k, err := DeriveSRK(im)
	if err != nil {
		return 0, err
	}
	o, err := objectSpec(k, SRKHandle, nv.RHOwner, k.SeedValue(nil, nil))
	if err != nil {
		return 0, err
	}
	return SRKHandle, im.AddPersistent(o)
}
