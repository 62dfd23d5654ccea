package blockfs

import (
	"bytes"
	"testing"
)

func TestMetadataEncoding(t *testing.T) {
	s := Metadata{Magic: Magic, Size: NVSize}.Encode()
	want := []byte{0xEF, 0xFD, 0xB6, 0xF5, 0x0D, 0x80, 0x80, 0x01, 0, 0}
	if !bytes.Equal(s[:10], want) || len(s) != SectorSize {
		t.Fatalf("metadata %x", s[:10])
	}
	m, err := DecodeMetadata(s)
	if err != nil || m.Magic != Magic || m.Size != NVSize {
		t.Fatalf("decode: %+v %v", m, err)
	}
	if z, _ := DecodeMetadata(Metadata{Magic: Magic}.Encode()); z.Size != 0 {
		t.Fatal("size 0")
	}
	bad := bytes.Repeat([]byte{0xff}, SectorSize)
	if _, err := DecodeMetadata(bad); err == nil {
		t.Fatal("non-terminating varint accepted")
	}
}

// Packing golden a0 under the test key reproduces the measured image.
