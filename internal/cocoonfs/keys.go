package cocoonfs

import (
	"crypto/hmac"
	"encoding/binary"
	"hash"

	"github.com/google/go-tpm/tpm2"
)

// Key purposes (the KDFa label).
const (
	purposeDerivation = 1
	purposeAuthRoot   = 2
	purposeAuthData   = 3
	purposePreauth    = 4
	purposeEncryption = 5
)

// Inode key subdomains as cocoon-tpm-storage 0.1.4 uses them (the format
// specification's table has the two swapped).
const (
	subdomainExtentsList = 1
	subdomainData        = 2
)

// Special inode numbers.
const (
	InodeAuthTree      = 1
	InodeAllocBitmap   = 2
	InodeIndexRoot     = 3
	inodeJournalLog    = 5
	inodeUpdateCounter = 6
	// FirstUserInode is the first number outside the reserved range 0-15.
	FirstUserInode = 16
)

// keys derives the subkeys of one filesystem from its root key.
type keys struct {
	l     Layout
	root  []byte
	cache map[keyID][]byte
}

type keyID struct {
	domain    uint64
	subdomain uint32
	purpose   byte
}

// rootKeyContext returns the context for the root key derivation: magic,
// version, the five hash identifiers, the cipher mode, the block cipher
// and key size, and the salt with its length.
func rootKeyContext(l Layout, salt []byte) []byte {
	b := []byte("COCOONFS")
	b = append(b, FormatVersion)
	for _, v := range []uint16{l.KDFHash, l.AuthTreeRootHMAC, l.AuthTreeNodeHash, l.AuthTreeDataHMAC, l.PreauthHMAC, AlgCBC, l.BlockCipher, l.BlockCipherKeyBits} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	b = append(b, byte(len(salt)))
	return append(b, salt...)
}

// newKeys derives the root key from the user's key material: TCG KDFa
// with SHA-512, as long as a kdf_hash_alg digest.
func newKeys(l Layout, key, salt []byte) *keys {
	root := tpm2.KDFa(mustHash(AlgSHA512), key, string([]byte{purposeDerivation}), rootKeyContext(l, salt), nil, 8*digestLen(l.KDFHash))
	return &keys{l: l, root: root, cache: map[keyID][]byte{}}
}

// derive returns the subkey for (domain, subdomain, purpose).
func (k *keys) derive(domain uint64, subdomain uint32, purpose byte) []byte {
	id := keyID{domain, subdomain, purpose}
	if v, ok := k.cache[id]; ok {
		return v
	}
	var n int
	switch purpose {
	case purposeDerivation:
		n = digestLen(k.l.KDFHash)
	case purposeAuthRoot:
		n = digestLen(k.l.AuthTreeRootHMAC)
	case purposeAuthData:
		n = digestLen(k.l.AuthTreeDataHMAC)
	case purposePreauth:
		n = digestLen(k.l.PreauthHMAC)
	case purposeEncryption:
		n = k.l.blockCipherKeyLen()
	}
	ctx := binary.LittleEndian.AppendUint64(nil, domain)
	ctx = binary.LittleEndian.AppendUint32(ctx, subdomain)
	v := tpm2.KDFa(mustHash(k.l.KDFHash), k.root, string([]byte{purpose}), ctx, nil, 8*n)
	if k.cache != nil {
		k.cache[id] = v
	}
	return v
}

func (k *keys) hmac(alg uint16, domain uint64, subdomain uint32, purpose byte) hash.Hash {
	return hmac.New(mustHash(alg).New, k.derive(domain, subdomain, purpose))
}
