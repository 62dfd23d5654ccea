package cocoonfs

import (
	"encoding/binary"
	"errors"
)

// Auxiliary filesystem metadata is plaintext, stored in a circular list of
// extents partitioned into one or two update groups. Each extent starts
// with encoded extent pointers to the next and next-but-one extent, an
// update group head carries an active/inactive byte, then comes the extent
// integrity protection section, then a part of the TLV payload.

func auxHdrLen(l Layout, head bool) int {
	n := 16 + l.integrityLen()
	if head {
		n++
	}
	return n
}

// readAux follows the update groups from the mutable header, verifies
// each extent and keeps the effective group's payload.
func (r *reader) readAux() error {
	h0, _, ok0 := decodeExtentPtr(r.mh.auxHeads[0])
	h1, _, ok1 := decodeExtentPtr(r.mh.auxHeads[1])
	if !ok0 {
		if ok1 {
			return errors.New("update group 1 without group 0")
		}
		return nil
	}
	type ext struct {
		e       Extent
		head    bool
		payload []byte
		active  byte
		ok      bool
	}
	var list []ext
	cur := h0
	for {
		if len(list) > 4096 {
			return errors.New("aux metadata list does not close")
		}
		b, err := r.extent(cur)
		if err != nil {
			return err
		}
		head := cur == h0 || (ok1 && cur == h1)
		hl := auxHdrLen(r.l, head)
		off := 16
		if head {
			off++
		}
		c := append([]byte(nil), b...)
		x := ext{e: cur, head: head}
		// The pointers sit in the tier 0 realm: unmask them even when the
		// extent's other contents do not verify.
		mask := b[off+checksumLen]
		if r.l.verifyIntegrity(c, 0, off) == nil {
			x.ok = true
			x.payload = c[hl:]
			if head {
				x.active = c[16]
			}
		} else {
			for i := 0; i < off; i++ {
				c[i] = b[i] ^ mask
			}
		}
		list = append(list, x)
		r.skip = append(r.skip, cur)
		next, _, ok := decodeExtentPtr(binary.LittleEndian.Uint64(c))
		if !ok {
			return errors.New("aux metadata: NIL link")
		}
		if next == h0 {
			break
		}
		cur = next
	}
	// Group 0 runs from h0 up to h1 (or the whole circle).
	var g0 []byte
	for i, x := range list {
		if i > 0 && ok1 && x.e == h1 {
			break
		}
		if !x.ok {
			return errors.New("aux metadata extent does not verify")
		}
		if i == 0 && x.active == 0 {
			return errors.New("aux metadata: update group 0 inactive (offline update interrupted); not supported")
		}
		g0 = append(g0, x.payload...)
	}
	n, err := auxTLVLen(g0)
	if err != nil {
		return err
	}
	r.auxPayload = g0[:n]
	return nil
}

// auxTLVLen returns the length of the TLV sequence up to and including
// its termination record (all-zero UUID).
func auxTLVLen(b []byte) (int, error) {
	p := 0
	for {
		if p+20 > len(b) {
			return 0, errors.New("aux metadata: truncated record")
		}
		n := int(binary.LittleEndian.Uint32(b[p+16:]))
		end := p + 20 + n
		if end > len(b) || end < p {
			return 0, errors.New("aux metadata: record overruns")
		}
		if allZero(b[p : p+16]) {
			return end, nil
		}
		p = end
	}
}

// auxReserve returns the extra reserve capacity of a TLV sequence, if its
// termination record defines one.
func auxReserve(tlv []byte) (uint64, bool) {
	if len(tlv) >= 28 && allZero(tlv[len(tlv)-28:len(tlv)-12]) && binary.LittleEndian.Uint32(tlv[len(tlv)-12:]) == 8 {
		return binary.LittleEndian.Uint64(tlv[len(tlv)-8:]), true
	}
	return 0, false
}
