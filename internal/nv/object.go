package nv

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// A persistent object is stored as the TPM's in-memory OBJECT struct
// (NvAddEvictObject). The offsets below are the measured sizeof/offsetof
// of both SVSM builds (tpm/layout/*.txt: OBJECT 2104, TPMT_PUBLIC 596,
// TPMT_SENSITIVE 1384, TPM2B_DIGEST/AUTH 50, TPM2B_NAME 54,
// MAX_RSA_KEY_BYTES 512, MAX_ECC_KEY_BYTES 80); integers are
// little-endian, TPM2B sizes u16 followed by the full buffer.
const (
	objSize          = 2104
	objAttributes    = 0
	objPublic        = 4
	objSensitive     = 600
	objQualifiedName = 1984
	objEvictHandle   = 2040
	objName          = 2044
	objHierarchy     = 2100

	pubType       = 0
	pubNameAlg    = 2
	pubAttributes = 4
	pubAuthPolicy = 8  // TPM2B_DIGEST, 50 bytes
	pubParameters = 60 // TPMU_PUBLIC_PARMS, 20 bytes
	pubUnique     = 80 // TPMU_PUBLIC_ID, 514 bytes

	sensType      = 0
	sensAuthValue = 2   // TPM2B_AUTH, 50 bytes
	sensSeedValue = 52  // TPM2B_DIGEST, 50 bytes
	sensSensitive = 102 // TPMU_SENSITIVE_COMPOSITE, 1282 bytes

	eccParamBytes = 2 + 80 // TPM2B_ECC_PARAMETER

	// rsaPrimeFlag marks an RSA sensitive area holding P, Q, dP, dQ and
	// qInv rather than P alone (CryptRsa.c, RSA_prime_flag).
	rsaPrimeFlag = 0x8000
)

// OBJECT_ATTRIBUTES bits (Global.h).
const (
	ObjEPSHierarchy = 1 << 1
	ObjSPSHierarchy = 1 << 3
	ObjEvict        = 1 << 4
	ObjPrimary      = 1 << 5
	ObjIsParent     = 1 << 13
	ObjOccupied     = 1 << 15
)

// Hierarchy handles.
const (
	RHOwner       = 0x40000001
	RHEndorsement = 0x4000000B
)

// ObjectSpec is a loaded object to persist.
type ObjectSpec struct {
	Handle     uint32 // 0x81xxxxxx
	Attributes uint32 // OBJECT_ATTRIBUTES
	Public     tpm2.TPMTPublic
	AuthValue  []byte // as the TPM keeps it (zero-padded to the nameAlg digest)
	SeedValue  []byte
	Private    []byte // RSA: P||Q||dP||dQ||qInv, each half the key size; ECC: the scalar d
	Name       []byte // nameAlg || H(public)
	QName      []byte // qualified name
	Hierarchy  uint32
}

func put2B(b []byte, off int, v []byte) {
	binary.LittleEndian.PutUint16(b[off:], uint16(len(v)))
	copy(b[off+2:], v)
}

// encodeObject returns the OBJECT struct of a persistent object.
func encodeObject(o ObjectSpec) ([]byte, error) {
	b := make([]byte, objSize)
	le := binary.LittleEndian
	le.PutUint32(b[objAttributes:], o.Attributes)
	p := b[objPublic : objPublic+596]
	le.PutUint16(p[pubType:], uint16(o.Public.Type))
	le.PutUint16(p[pubNameAlg:], uint16(o.Public.NameAlg))
	attrs := tpm2.Marshal(o.Public.ObjectAttributes)
	le.PutUint32(p[pubAttributes:], binary.BigEndian.Uint32(attrs))
	put2B(p, pubAuthPolicy, o.Public.AuthPolicy.Buffer)
	pp := p[pubParameters : pubParameters+20]
	u := p[pubUnique : pubUnique+514]
	s := b[objSensitive : objSensitive+1384]
	le.PutUint16(s[sensType:], uint16(o.Public.Type))
	put2B(s, sensAuthValue, o.AuthValue)
	put2B(s, sensSeedValue, o.SeedValue)
	sym := func(d tpm2.TPMTSymDefObject) {
		le.PutUint16(pp[0:], uint16(d.Algorithm))
		if d.Algorithm == tpm2.TPMAlgAES {
			kb, _ := d.KeyBits.AES()
			md, _ := d.Mode.AES()
			le.PutUint16(pp[2:], uint16(*kb))
			le.PutUint16(pp[4:], uint16(*md))
		}
	}
	switch o.Public.Type {
	case tpm2.TPMAlgRSA:
		r, err := o.Public.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		sym(r.Symmetric)
		if err := putSigScheme(pp, tpm2.Marshal(&r.Scheme)); err != nil {
			return nil, err
		}
		le.PutUint16(pp[12:], uint16(r.KeyBits))
		le.PutUint32(pp[16:], r.Exponent)
		n, err := o.Public.Unique.RSA()
		if err != nil {
			return nil, err
		}
		put2B(u, 0, n.Buffer)
		if len(o.Private) != 5*len(n.Buffer)/2 {
			return nil, fmt.Errorf("RSA private area is %d bytes, want %d", len(o.Private), 5*len(n.Buffer)/2)
		}
		le.PutUint16(s[sensSensitive:], rsaPrimeFlag|uint16(len(o.Private)))
		copy(s[sensSensitive+2:], o.Private)
	case tpm2.TPMAlgECC:
		e, err := o.Public.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		sym(e.Symmetric)
		if e.KDF.Scheme != tpm2.TPMAlgNull && e.KDF.Scheme != 0 {
			return nil, fmt.Errorf("persisting ECC keys with a KDF is not supported")
		}
		if err := putSigScheme(pp, tpm2.Marshal(&e.Scheme)); err != nil {
			return nil, err
		}
		le.PutUint16(pp[12:], uint16(e.CurveID))
		le.PutUint16(pp[14:], uint16(tpm2.TPMAlgNull))
		pt, err := o.Public.Unique.ECC()
		if err != nil {
			return nil, err
		}
		put2B(u, 0, pt.X.Buffer)
		put2B(u, eccParamBytes, pt.Y.Buffer)
		put2B(s, sensSensitive, o.Private)
	default:
		return nil, fmt.Errorf("cannot persist an object of type 0x%04x", uint16(o.Public.Type))
	}
	put2B(b, objQualifiedName, o.QName)
	le.PutUint32(b[objEvictHandle:], o.Handle)
	put2B(b, objName, o.Name)
	le.PutUint32(b[objHierarchy:], o.Hierarchy)
	return b, nil
}

// AddPersistent adds a persistent object as TPM2_EvictControl does: the
// entry (handle, OBJECT) is appended after the last one.
func (im *Image) AddPersistent(o ObjectSpec) error {
	p := im.Profile
	if o.Handle>>24 != HTPersistent {
		return fmt.Errorf("0x%08x is not a persistent handle", o.Handle)
	}
	if im.Find(o.Handle) >= 0 {
		return fmt.Errorf("persistent handle 0x%08x is already used", o.Handle)
	}
	if p.EvictObjectSize != 4+4+objSize {
		return fmt.Errorf("profile %s stores objects of %d bytes; this tool writes %d", p.Name, p.EvictObjectSize, 4+4+objSize)
	}
	obj, err := encodeObject(o)
	if err != nil {
		return fmt.Errorf("persistent object 0x%08x: %w", o.Handle, err)
	}
	if err := im.testSpace(p.EvictObjectSize, false, false); err != nil {
		return fmt.Errorf("persistent object 0x%08x: %w", o.Handle, err)
	}
	payload := binary.LittleEndian.AppendUint32(nil, o.Handle)
	e := Entry{Handle: o.Handle, Object: append(payload, obj...)}
	im.Entries = append(im.Entries, e)
	im.Free = im.Free[e.size(p):]
	return nil
}

// ObjectPublic decodes the public area of a persistent object entry.
func ObjectPublic(e Entry) (tpm2.TPMTPublic, uint32, error) {
	if len(e.Object) != 4+objSize {
		return tpm2.TPMTPublic{}, 0, fmt.Errorf("persistent object 0x%08x: %d bytes", e.Handle, len(e.Object))
	}
	o := e.Object[4:]
	le := binary.LittleEndian
	p := o[objPublic:]
	get2B := func(b []byte, off, max int) ([]byte, error) {
		n := int(le.Uint16(b[off:]))
		if n > max {
			return nil, fmt.Errorf("TPM2B of %d bytes", n)
		}
		return append([]byte(nil), b[off+2:off+2+n]...), nil
	}
	var pub tpm2.TPMTPublic
	pub.Type = tpm2.TPMIAlgPublic(le.Uint16(p[pubType:]))
	pub.NameAlg = tpm2.TPMIAlgHash(le.Uint16(p[pubNameAlg:]))
	var ab [4]byte
	binary.BigEndian.PutUint32(ab[:], le.Uint32(p[pubAttributes:]))
	attrs, err := tpm2.Unmarshal[tpm2.TPMAObject](ab[:])
	if err != nil {
		return pub, 0, err
	}
	pub.ObjectAttributes = *attrs
	pol, err := get2B(p, pubAuthPolicy, 48)
	if err != nil {
		return pub, 0, err
	}
	pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: pol}
	pp := p[pubParameters:]
	symOf := func() tpm2.TPMTSymDefObject {
		alg := tpm2.TPMAlgID(le.Uint16(pp[0:]))
		if alg != tpm2.TPMAlgAES {
			return tpm2.TPMTSymDefObject{Algorithm: alg}
		}
		return tpm2.TPMTSymDefObject{Algorithm: alg,
			KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(le.Uint16(pp[2:]))),
			Mode:    tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMIAlgSymMode(le.Uint16(pp[4:])))}
	}
	u := p[pubUnique:]
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{Symmetric: symOf(),
			Scheme: rsaSchemeAt(pp), KeyBits: tpm2.TPMKeyBits(le.Uint16(pp[12:])), Exponent: le.Uint32(pp[16:])})
		n, err := get2B(u, 0, 512)
		if err != nil {
			return pub, 0, err
		}
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	case tpm2.TPMAlgECC:
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{Symmetric: symOf(),
			Scheme:  eccSchemeAt(pp),
			CurveID: tpm2.TPMECCCurve(le.Uint16(pp[12:])), KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMIAlgKDF(le.Uint16(pp[14:]))}})
		x, err := get2B(u, 0, 80)
		if err != nil {
			return pub, 0, err
		}
		y, err := get2B(u, eccParamBytes, 80)
		if err != nil {
			return pub, 0, err
		}
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	default:
		return pub, 0, fmt.Errorf("persistent object 0x%08x: type 0x%04x", e.Handle, uint16(pub.Type))
	}
	return pub, le.Uint32(o[objHierarchy:]), nil
}
