package blockfs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
	"github.com/vtpm-mfg/vtpm-mfg/internal/xts"
)

const fuzzPath = "/fleet/vm-1/state.img"

// fuzzVector returns the measured test key and the poc-a0 image made under
// it, read from the reference directory at run time. Without it, it returns
// a key of its own and an image Encode made under that key, so that the
// targets still start past decryption.
func fuzzVector(f *testing.F) (key, img []byte) {
	if d := sharedvec.Dir(); d != "" {
		k, err1 := os.ReadFile(filepath.Join(d, "svsm/vectors/key-00-3f.bin"))
		im, err2 := os.ReadFile(filepath.Join(d, "svsm/vectors/poc-a0.img"))
		if err1 == nil && err2 == nil && len(k) == xts.KeySize {
			return k, im
		}
	}
	key = make([]byte, xts.KeySize)
	rand.Read(key)
	nv := make([]byte, NVSize)
	rand.Read(nv)
	img, err := Encode(nv, key)
	if err != nil {
		f.Fatal(err)
	}
	return key, img
}

func FuzzDecodeMetadata(f *testing.F) {
	f.Add(Metadata{Magic: Magic, Size: NVSize}.Encode())
	f.Add(Metadata{Magic: ^uint32(0), Size: ^uint64(0)}.Encode()[:16])
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x10, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, s []byte) {
		m, err := DecodeMetadata(s)
		if err != nil {
			if m != (Metadata{}) {
				t.Fatalf("error %v with metadata %+v", err, m)
			}
			return
		}
		// What decodes re-encodes to a sector that decodes the same, and
		// the canonical encoding is a prefix-compatible form of it.
		enc := m.Encode()
		if len(enc) != SectorSize {
			t.Fatalf("encoded metadata is %d bytes", len(enc))
		}
		back, err := DecodeMetadata(enc)
		if err != nil || back != m {
			t.Fatalf("%+v re-encodes to %x, which decodes to %+v, %v", m, enc[:16], back, err)
		}
	})
}

// checkDecoded asserts what a successful Decode promises.
func checkDecoded(t *testing.T, head, key, nv []byte, m Metadata) {
	t.Helper()
	if len(nv) != NVSize || m.Magic != Magic || m.Size != NVSize {
		t.Fatalf("decoded %d bytes, metadata %+v", len(nv), m)
	}
	enc, err := Encode(nv, key)
	if err != nil {
		t.Fatal(err)
	}
	// XTS is a bijection per sector: re-encoding gives back the image's
	// NVChip sectors (sector 0 may carry bytes beyond the varints or a
	// longer varint form, which the canonical encoding does not).
	if !bytes.Equal(enc[SectorSize:], head[SectorSize:MinImageSize]) {
		t.Fatal("re-encoded NVChip sectors differ from the image")
	}
}

// checkDecodeError asserts that a failure is an error naming the image.
func checkDecodeError(t *testing.T, head, key []byte, err error) {
	t.Helper()
	var e *Error
	if len(head) >= MinImageSize && len(key) != xts.KeySize {
		if err == nil || err.Error() == "" {
			t.Fatalf("key of %d bytes accepted", len(key))
		}
		return
	}
	if !errors.As(err, &e) || e.Path != fuzzPath || e.Msg == "" {
		t.Fatalf("error %v (%T) does not name the image", err, err)
	}
}

// FuzzDecode decodes arbitrary bytes under an arbitrary key: before
// authentication, so almost every input must be refused cleanly.
func FuzzDecode(f *testing.F) {
	key, img := fuzzVector(f)
	wrong := append([]byte(nil), key...)
	wrong[0] ^= 1
	f.Add(img, key)
	f.Add(img, wrong)
	f.Add(img[:MinImageSize-1], key)
	f.Add(img, key[:32])
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, head, key []byte) {
		nv, m, err := Decode(fuzzPath, head, key)
		if err != nil {
			if nv != nil {
				t.Fatalf("error %v with %d bytes of NVChip", err, len(nv))
			}
			checkDecodeError(t, head, key, err)
			return
		}
		if len(head) < MinImageSize {
			t.Fatalf("%d-byte image decoded", len(head))
		}
		checkDecoded(t, head, key, nv, m)
	})
}

// FuzzDecodeKnownKey gets past decryption: with the test key, the input is
// taken both as an image and as the plaintext of its metadata sector
// (encrypted under the key in front of the vector's NVChip sectors), so
// that what the reader checks is what the fuzzer mutates.
func FuzzDecodeKnownKey(f *testing.F) {
	key, img := fuzzVector(f)
	c, err := xts.New(key)
	if err != nil {
		f.Fatal(err)
	}
	plain := make([]byte, MinImageSize)
	if err := c.DecryptSectors(plain, img[:MinImageSize]); err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add(plain[:SectorSize])
	f.Add(plain[:16])
	f.Add(Metadata{Magic: Magic, Size: NVSize - 1}.Encode()[:16])
	f.Add(Metadata{Magic: Magic + 1, Size: NVSize}.Encode()[:16])
	f.Fuzz(func(t *testing.T, data []byte) {
		// As an image.
		nv, m, err := Decode(fuzzPath, data, key)
		if err != nil {
			checkDecodeError(t, data, key, err)
		} else {
			checkDecoded(t, data, key, nv, m)
		}

		// As a metadata sector: the reader accepts it exactly when it holds
		// the magic and the size 16384, and then returns the NVChip.
		pt := make([]byte, SectorSize)
		copy(pt, data)
		ct := append([]byte(nil), img[:MinImageSize]...)
		if err := c.EncryptSectors(ct[:SectorSize], pt); err != nil {
			t.Fatal(err)
		}
		nv, m, err = Decode(fuzzPath, ct, key)
		want, merr := DecodeMetadata(pt)
		ok := merr == nil && want.Magic == Magic && want.Size == NVSize
		switch {
		case ok && err != nil:
			t.Fatalf("valid metadata refused: %v", err)
		case !ok && err == nil:
			t.Fatalf("metadata %+v (%v) accepted", want, merr)
		case err != nil:
			checkDecodeError(t, ct, key, err)
			if merr == nil && want.Magic == Magic && m != want {
				t.Fatalf("size error reports metadata %+v, want %+v", m, want)
			}
		default:
			if m != want || !bytes.Equal(nv, plain[SectorSize:]) {
				t.Fatalf("decoded %+v and an NVChip other than the vector's", m)
			}
		}
	})
}
