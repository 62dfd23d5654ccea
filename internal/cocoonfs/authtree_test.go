package cocoonfs

import "testing"

// The tree shapes below were worked out by hand from the format's rules
// for the default layout (1 KiB nodes of 32 SHA-256 digests, 512-byte
// data blocks).
func TestTreeGeom(t *testing.T) {
	l, _ := DefaultLayout(128)
	for _, c := range []struct {
		nodes   uint64
		levels  int
		covered uint64
	}{
		{1, 1, 32}, {2, 2, 32}, {3, 2, 64}, {33, 2, 1024}, {34, 3, 1024}, {35, 3, 1024}, {36, 3, 1056},
	} {
		g, err := newTreeGeom(l, c.nodes)
		if err != nil {
			t.Fatal(err)
		}
		if g.levels != c.levels || g.maxCovered() != c.covered {
			t.Errorf("%d nodes: levels %d covered %d, want %d %d", c.nodes, g.levels, g.maxCovered(), c.levels, c.covered)
		}
	}
	g, _ := newTreeGeom(l, 531)
	// Root, then the first level-1 node, then its 32 leaves.
	if g.nodeAt(0, 2) != 0 || g.nodeAt(0, 1) != 1 || g.nodeAt(0, 0) != 2 || g.nodeAt(32, 0) != 3 || g.nodeAt(1024, 1) != 34 {
		t.Errorf("DFS indices: %d %d %d %d %d", g.nodeAt(0, 2), g.nodeAt(0, 1), g.nodeAt(0, 0), g.nodeAt(32, 0), g.nodeAt(1024, 1))
	}
}
