package cocoonfs

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/vtpm-mfg/vtpm-mfg/internal/sharedvec"
)

// The CRC-32 half of the checksum is the standard CRC-32 (check value
// 0xCBF43926 for "123456789"); the second half is the CRC-32 of the data
// with neighboring bits swapped (0x55 <-> 0xAA).
func TestChecksumPair(t *testing.T) {
	c := checksum([]byte("123456789"))
	if binary.LittleEndian.Uint32(c[:4]) != 0xCBF43926 {
		t.Errorf("crc %x", c[:4])
	}
	swapped := []byte("123456789")
	for i := range swapped {
		swapped[i] = swapNeighborBits(swapped[i])
	}
	if d := checksum(swapped); !bytes.Equal(d[:4], c[4:]) {
		t.Errorf("swapped-bits crc %x, want %x", c[4:], d[:4])
	}
	if c2 := checksum([]byte("1234"), []byte("56789")); c2 != c {
		t.Error("checksum depends on how the data is split")
	}
	// The golden static header: commit ID = checksum of the header with
	// its protections removed, masked.
	img := sharedvec.Read(t, "svsm/cocoonfs/a-aes128-8M-n.img")
	l, _ := DefaultLayout(128)
	b := append([]byte(nil), img[:512]...)
	commit := append([]byte(nil), b[31:39]...)
	mask := b[39]
	if err := l.verifyIntegrity(b, 8, 23); err != nil {
		t.Fatal(err)
	}
	sum := checksum(b)
	for i := range sum {
		if sum[i]^mask != commit[i] {
			t.Fatalf("commit ID %x, checksum %x, mask %x", commit, sum, mask)
		}
	}
}

func TestEncodings(t *testing.T) {
	// Values from the golden image a: the aux metadata group heads and the
	// inode index entry leaf pointer of its mutable header, and the
	// authentication tree's extents list.
	if v := encodeExtentPtr(Extent{3996, 12}, false); v != 0x07ce16 {
		t.Errorf("extent ptr %x", v)
	}
	if e, ind, ok := decodeExtentPtr(0x07d416); !ok || ind || e != (Extent{4008, 12}) {
		t.Errorf("decoded %v %v %v", e, ind, ok)
	}
	if e, ind, ok := decodeExtentPtr(encodeExtentPtr(Extent{7, 64}, true)); !ok || !ind || e != (Extent{7, 64}) {
		t.Errorf("round trip %v %v", e, ind)
	}
	if _, _, ok := decodeExtentPtr(nilPtr); ok {
		t.Error("NIL decoded as an extent")
	}
	if encodeBlockPtr(5) != 0x280 {
		t.Error("block ptr")
	}
	if _, _, err := decodeBlockPtr(0x281); err == nil {
		t.Error("reserved block pointer bits accepted")
	}
	if got := encodeExtentsList([]Extent{{12, 3984}}); !bytes.Equal(got, []byte{0x0c, 0x90, 0x1f, 0, 0}) {
		t.Errorf("extents list %x", got)
	}
	for _, c := range []struct {
		v    int64
		want []byte
	}{{0, []byte{0}}, {-1, []byte{0x7f}}, {63, []byte{0x3f}}, {64, []byte{0xc0, 0x00}}, {-64, []byte{0x40}}, {-65, []byte{0xbf, 0x7f}}, {-4096, []byte{0x80, 0x60}}} {
		got := appendSleb128(nil, c.v)
		if !bytes.Equal(got, c.want) {
			t.Errorf("sleb128(%d) = %x, want %x", c.v, got, c.want)
		}
		if v, n, err := sleb128(got); err != nil || v != c.v || n != len(got) {
			t.Errorf("sleb128 decode %x: %d %d %v", got, v, n, err)
		}
	}
	for _, v := range []uint64{0, 127, 128, 3984, 1<<63 + 5, ^uint64(0)} {
		b := appendUleb128(nil, v)
		if got, n, err := uleb128(b); err != nil || got != v || n != len(b) {
			t.Errorf("uleb128 %d: %d %v", v, got, err)
		}
	}
	if _, _, err := uleb128([]byte{0x80, 0x80}); err == nil {
		t.Error("unterminated LEB128 accepted")
	}
	// A backwards extent (negative delta) round-trips.
	exts := []Extent{{4096, 128}, {6, 1}}
	got, n, err := decodeExtentsList(encodeExtentsList(exts))
	if err != nil || n != len(encodeExtentsList(exts)) || len(got) != 2 || got[1] != exts[1] {
		t.Errorf("extents list round trip %v %v", got, err)
	}
}

// Upstream's code departs from the format specification in the root key
// context (it has the CBC mode identifier) and in the inode key subdomains
// (extents list 1, data 2). Only that reading opens the golden images.
func TestKeyDerivationDivergences(t *testing.T) {
	img := sharedvec.Read(t, "svsm/cocoonfs/a-aes128-8M-n.img")
	key := goldenKey(t)
	sh, _ := decodeStaticHeader(img)
	l := sh.layout
	mh, _ := decodeMutableHeader(l, img[512:])
	leaf := img[int(mh.entryLeaf)*128 : int(mh.entryLeaf)*128+128]
	preauth := func(k *keys, sub uint32) bool {
		m := k.hmac(l.PreauthHMAC, InodeIndexRoot, sub, purposePreauth)
		m.Write(leaf)
		m.Write(cipherParams(l))
		m.Write([]byte{0, authSubjectIndexNode})
		return hmac.Equal(m.Sum(nil), mh.preauth)
	}
	code := newKeys(l, key, sh.salt)
	if !preauth(code, subdomainData) {
		t.Fatal("the code's derivation does not authenticate the golden entry leaf")
	}
	if preauth(code, 1) {
		t.Error("the specification's data subdomain (1) authenticates too")
	}
	ctx := rootKeyContext(l, sh.salt)
	if !bytes.Equal(ctx[19:21], []byte{0x00, 0x42}) {
		t.Errorf("root key context has %x where TPM_ALG_CBC belongs", ctx[19:21])
	}
	specCtx := append(append([]byte(nil), ctx[:19]...), ctx[21:]...)
	spec := &keys{l: l, root: tpm2.KDFa(mustHash(AlgSHA512), key, "\x01", specCtx, nil, 8*digestLen(l.KDFHash))}
	if preauth(spec, subdomainData) {
		t.Error("the specification's root key context (no cipher mode) authenticates too")
	}
	long := &keys{l: l, root: tpm2.KDFa(mustHash(AlgSHA512), key, "\x01", ctx, nil, 512)}
	if preauth(long, subdomainData) {
		t.Error("a 512-bit root key authenticates too")
	}
}

// The authentication tree this package sizes for an image equals the one
// the reference implementation made for each golden image.
func TestTreeSizeMatchesGolden(t *testing.T) {
	key := goldenKey(t)
	for _, f := range []string{"a-aes128-8M-n.img", "b-aes256-8M-n.img", "c-empty-aes128-min.img", "d-aes128-min.img", "d-aes256-min.img"} {
		img := sharedvec.Read(t, "svsm/cocoonfs/"+f)
		sh, _ := decodeStaticHeader(img)
		r := &reader{img: img, l: sh.layout, sh: sh, ab: sh.layout.allocBlockSize()}
		r.k = newKeys(r.l, key, sh.salt)
		if err := r.open(); err != nil {
			t.Fatal(err)
		}
		n, err := nodeCountFor(r.l, r.mh.imageSize)
		if err != nil || n != r.g.nodeCount {
			t.Errorf("%s: %d nodes for %d blocks, the reference made %d (%v)", f, n, r.mh.imageSize, r.g.nodeCount, err)
		}
	}
}
