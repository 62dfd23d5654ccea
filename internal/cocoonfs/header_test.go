package cocoonfs

import (
	"testing"

	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

func TestGoldenStaticHeaders(t *testing.T) {
	for _, c := range []struct {
		file     string
		strength int
	}{
		{"a-aes128-8M-n.img", 128}, {"b-aes256-8M-n.img", 256}, {"c-empty-aes128-min.img", 128},
		{"d-aes128-min.img", 128}, {"d-aes256-min.img", 256},
	} {
		img := sharedvec.Read(t, "svsm/cocoonfs/"+c.file)
		h, err := decodeStaticHeader(img)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		want, _ := DefaultLayout(c.strength)
		if h.layout != want || string(h.salt) != "\xdd\xee\xff" {
			t.Errorf("%s: layout %+v salt %x", c.file, h.layout, h.salt)
		}
		// Re-encoding gives the same protected bytes: same mask choice.
		enc := encodeStaticHeader(h.layout, h.salt)
		if string(enc) != string(img[:len(enc)]) {
			t.Errorf("%s: re-encoded static header differs\n got %x\nwant %x", c.file, enc[:64], img[:64])
		}
	}
	info, err := decodeMkfsInfoHeader(sharedvec.Read(t, "svsm/cocoonfs/e-mkfsinfo-header-8M.img"))
	if err != nil {
		t.Fatal(err)
	}
	if info.ImageBytes != 8<<20 || info.AuxLen != 28 || string(info.Salt) != "\xdd\xee\xff" {
		t.Errorf("mkfsinfo: %+v", info)
	}
}
