package simcheck

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	mrand "math/rand"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/vtpm-mfg/vtpm-mfg/internal/ek"
	"github.com/vtpm-mfg/vtpm-mfg/internal/luks"
	"github.com/vtpm-mfg/vtpm-mfg/internal/pipeline"
	"github.com/vtpm-mfg/vtpm-mfg/internal/seal"
)

// simSPS is the storage primary seed GetWithFixedSeedInsecure puts in the
// simulator: math/rand's bytes 64..127 for the seed (EPS, SPS, PPS in turn).
func simSPS(seed int64) []byte {
	b := make([]byte, 128)
	mrand.New(mrand.NewSource(seed)).Read(b)
	return b[64:]
}

type policyCase struct {
	name   string
	pcrs   []int // literal PCR policy over the simulator's current values
	signed []int // signed PCR policy over these PCRs
	pin    string
}

var cases = []policyCase{
	{name: "none"},
	{name: "pcr7", pcrs: []int{7}},
	{name: "signed-pcr11", signed: []int{11}},
	{name: "pin", pin: "1234"},
	{name: "signed-pcr11+pcr7+pin", signed: []int{11}, pcrs: []int{7}, pin: "correct horse"},
}

// Objects sealed offline by SealSecret, in every systemd format and for
// each policy kind, load in the simulator under the parent that systemd
// version creates (the legacy primary, or the SRK template) and unseal in a
// policy session that satisfies the token's policy; the result is the
// secret. A blob for one parent does not load under the other.
func TestSealedObjectsUnsealInSimulator(t *testing.T) {
	signer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	seeds := []int64{1, 7}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, s := range seeds {
		sim, err := simulator.GetWithFixedSeedInsecure(s)
		if err != nil {
			t.Fatal(err)
		}
		tpm := transport.FromReadWriter(sim)
		// Move PCRs 7 and 11 away from their reset value.
		for _, i := range []int{7, 11} {
			d := sha256.Sum256([]byte(fmt.Sprintf("measurement %d", i)))
			if _, err := (tpm2.PCRExtend{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)},
				Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}}}).Execute(tpm); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range luks.Generations {
			parent, err := pipeline.SealParentFromSeed(simSPS(s), ek.Reversed1_83, g.UsesSRK())
			if err != nil {
				t.Fatal(err)
			}
			other, _ := pipeline.SealParentFromSeed(simSPS(s), ek.Reversed1_83, !g.UsesSRK())
			for _, c := range cases {
				t.Run(fmt.Sprintf("seed%d/%d/%s", s, g, c.name), func(t *testing.T) {
					p := &luks.Policy{PCRs: map[int][]byte{}}
					for _, i := range c.pcrs {
						p.PCRs[i] = readPCR(t, tpm, i)
					}
					if c.signed != nil {
						p.PubKeyPEM, p.PubKeyPCRs = pubPEM, c.signed
					}
					var pin []byte
					if c.pin != "" {
						p.PIN, pin = true, []byte(c.pin)
					}
					en, err := pipeline.SealSecret(parent, g, p, pin, 1)
					if err != nil {
						t.Fatal(err)
					}
					obj := blobOf(t, en.Token)
					if want := g.Attributes(pin != nil); obj.Public.ObjectAttributes != want {
						t.Errorf("attributes %+v, want %+v", obj.Public.ObjectAttributes, want)
					}
					var auth []byte
					if pin != nil {
						var salt []byte
						if en.Token.Salt != "" {
							salt, _ = base64.StdEncoding.DecodeString(en.Token.Salt)
						}
						if (salt != nil) != (g >= luks.Systemd254) {
							t.Errorf("systemd %d: salt %x", g, salt)
						}
						auth, _ = luks.PINAuth(pin, salt)
					}
					got := unsealInSim(t, tpm, parent.Public, obj, p, signer, auth)
					if !bytes.Equal(got, en.Secret) {
						t.Fatalf("simulator unsealed %x, sealed %x", got, en.Secret)
					}
					// Under the other parent the TPM refuses the blob.
					if err := loadOnly(tpm, other.Public, obj); err == nil {
						t.Errorf("blob loaded under %s too", other.What)
					}
				})
			}
		}
		sim.Close()
	}
}

func readPCR(t *testing.T, tpm transport.TPM, i int) []byte {
	sel, _ := seal.PCRSelection(tpm2.TPMAlgSHA256, []int{i})
	rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(tpm)
	if err != nil || len(rsp.PCRValues.Digests) != 1 {
		t.Fatalf("PCRRead %d: %v", i, err)
	}
	return rsp.PCRValues.Digests[0].Buffer
}

func blobOf(t *testing.T, tok *luks.Token) *seal.Object {
	b, err := base64.StdEncoding.DecodeString(tok.Blob)
	if err != nil {
		t.Fatal(err)
	}
	obj, rest, err := seal.ParseBlob(b)
	if err != nil || len(rest) != 0 {
		t.Fatalf("blob: %v (%d trailing bytes)", err, len(rest))
	}
	return obj
}

func createParent(tpm transport.TPM, tmpl tpm2.TPMTPublic) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

func flush(tpm transport.TPM, h tpm2.TPMHandle) { tpm2.FlushContext{FlushHandle: h}.Execute(tpm) }

func loadOnly(tpm transport.TPM, parentPub tpm2.TPMTPublic, obj *seal.Object) error {
	tmpl := parentPub
	tmpl.Unique = emptyUnique(parentPub)
	ph, pn, err := createParent(tpm, tmpl)
	if err != nil {
		return err
	}
	defer flush(tpm, ph)
	rsp, err := tpm2.Load{ParentHandle: tpm2.AuthHandle{Handle: ph, Name: pn, Auth: tpm2.PasswordAuth(nil)},
		InPrivate: tpm2.TPM2BPrivate{Buffer: obj.Private}, InPublic: tpm2.New2B(obj.Public)}.Execute(tpm)
	if err == nil {
		flush(tpm, rsp.ObjectHandle)
	}
	return err
}

func emptyUnique(pub tpm2.TPMTPublic) tpm2.TPMUPublicID {
	return tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
}

// unsealInSim creates the parent from its template, checks it is the key
// derived offline, loads the object and unseals it in a policy session
// built as systemd-cryptsetup builds it.
func unsealInSim(t *testing.T, tpm transport.TPM, parentPub tpm2.TPMTPublic, obj *seal.Object, p *luks.Policy, signer *rsa.PrivateKey, auth []byte) []byte {
	tmpl := parentPub
	tmpl.Unique = emptyUnique(parentPub)
	cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	defer flush(tpm, cp.ObjectHandle)
	if simPub, _ := cp.OutPublic.Contents(); !bytes.Equal(tpm2.Marshal(simPub), tpm2.Marshal(parentPub)) {
		t.Fatalf("the simulator's parent differs from the derived one")
	}
	ld, err := tpm2.Load{ParentHandle: tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate: tpm2.TPM2BPrivate{Buffer: obj.Private}, InPublic: tpm2.New2B(obj.Public)}.Execute(tpm)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer flush(tpm, ld.ObjectHandle)
	// go-tpm v0.9.8 cuts an authValue at its first zero byte when it
	// computes a session HMAC (hmacKeyFromAuthValue); for such values the
	// PIN is proven with TPM2_PolicyPassword (same policy digest as
	// PolicyAuthValue) and the authValue in the clear.
	password := bytes.IndexByte(auth, 0) >= 0
	var opts []tpm2.AuthOption
	switch {
	case password:
		opts = append(opts, tpm2.Password(auth))
	case auth != nil:
		opts = append(opts, tpm2.Auth(auth))
	}
	sess, closeSess, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSess()
	if len(p.PubKeyPEM) > 0 {
		vals := map[int][]byte{}
		for _, i := range p.PubKeyPCRs {
			vals[i] = readPCR(t, tpm, i)
		}
		// The OS vendor signs the PolicyPCR digest of the expected values.
		approved := seal.NewPolicy()
		if err := approved.PCR(tpm2.TPMAlgSHA256, vals); err != nil {
			t.Fatal(err)
		}
		aHash := sha256.Sum256(approved.Digest())
		sig, err := rsa.SignPKCS1v15(rand.Reader, signer, crypto.SHA256, aHash[:])
		if err != nil {
			t.Fatal(err)
		}
		vpub, _ := seal.RSAVerifyKey(&signer.PublicKey)
		le, err := tpm2.LoadExternal{InPublic: tpm2.New2B(vpub), Hierarchy: tpm2.TPMRHOwner}.Execute(tpm)
		if err != nil {
			t.Fatalf("LoadExternal: %v", err)
		}
		defer flush(tpm, le.ObjectHandle)
		sel, _ := seal.PCRSelection(tpm2.TPMAlgSHA256, p.PubKeyPCRs)
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(tpm); err != nil {
			t.Fatalf("PolicyPCR: %v", err)
		}
		vs, err := tpm2.VerifySignature{KeyHandle: le.ObjectHandle, Digest: tpm2.TPM2BDigest{Buffer: aHash[:]},
			Signature: tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
				&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})}}.Execute(tpm)
		if err != nil {
			t.Fatalf("VerifySignature: %v", err)
		}
		if _, err := (tpm2.PolicyAuthorize{PolicySession: sess.Handle(), ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved.Digest()},
			KeySign: le.Name, CheckTicket: vs.Validation}).Execute(tpm); err != nil {
			t.Fatalf("PolicyAuthorize: %v", err)
		}
	}
	if len(p.PCRs) > 0 {
		sel, _ := seal.PCRSelection(tpm2.TPMAlgSHA256, p.PCRList())
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(tpm); err != nil {
			t.Fatalf("PolicyPCR: %v", err)
		}
	}
	switch {
	case p.PIN && password:
		policyPassword(t, tpm, sess.Handle())
	case p.PIN:
		if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(tpm); err != nil {
			t.Fatalf("PolicyAuthValue: %v", err)
		}
	}
	dg, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dg.PolicyDigest.Buffer, obj.Public.AuthPolicy.Buffer) {
		t.Fatalf("session policy digest %x, sealed object's %x", dg.PolicyDigest.Buffer, obj.Public.AuthPolicy.Buffer)
	}
	if password {
		return unsealWithPassword(t, tpm, ld.ObjectHandle, sess.Handle(), auth)
	}
	us, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: sess}}.Execute(tpm)
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	return us.OutData.Buffer
}

// policyPassword sends TPM2_PolicyPassword, which go-tpm has no command for.
func policyPassword(t *testing.T, tpm transport.TPM, session tpm2.TPMHandle) {
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 14)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCPolicyPassword))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(session))
	rsp, err := tpm.Send(cmd)
	if err != nil || len(rsp) < 10 || binary.BigEndian.Uint32(rsp[6:]) != 0 {
		t.Fatalf("PolicyPassword: %v %x", err, rsp)
	}
}

// unsealWithPassword sends TPM2_Unseal with the authValue in the clear in
// a policy session that ran TPM2_PolicyPassword (go-tpm's response check
// rejects the nonce the TPM returns for it).
func unsealWithPassword(t *testing.T, tpm transport.TPM, item, session tpm2.TPMHandle, auth []byte) []byte {
	area := binary.BigEndian.AppendUint32(nil, uint32(session))
	area = append(area, 0, 0, 0) // empty nonceCaller, no session attributes
	area = binary.BigEndian.AppendUint16(area, uint16(len(auth)))
	area = append(area, auth...)
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(10+4+4+len(area)))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCUnseal))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(item))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(len(area)))
	cmd = append(cmd, area...)
	rsp, err := tpm.Send(cmd)
	if err != nil || len(rsp) < 16 || binary.BigEndian.Uint32(rsp[6:]) != 0 {
		t.Fatalf("Unseal (password): %v %x", err, rsp)
	}
	// header, parameterSize, TPM2B_SENSITIVE_DATA
	n := int(binary.BigEndian.Uint16(rsp[14:]))
	return rsp[16 : 16+n]
}
