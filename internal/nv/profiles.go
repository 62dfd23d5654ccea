package nv

// The tables below are the measured layouts (sizeof/offsetof from the real
// builds, x86_64) and the values TPM_Manufacture leaves in each field.

// persistentData183 is PERSISTENT_DATA as laid out by both SVSM builds of
// the TCG reference code (1.83 and its 2026 successor have the same layout).
var persistentData183 = Region{
	Name: "PERSISTENT_DATA", Off: 0, Size: 952, Fill: 0xFF,
	Fields: []Field{
		{Name: "platformReserved", Off: 0, Size: 16, Kind: Bytes, Default: rep(0xFF, 16)},
		{Name: "disableClear", Off: 16, Size: 4, Kind: U32, Default: le32(0)},
		{Name: "ownerAlg", Off: 20, Size: 2, Kind: U16, Default: le16(0x0010)},
		{Name: "endorsementAlg", Off: 22, Size: 2, Kind: U16, Default: le16(0x0010)},
		{Name: "lockoutAlg", Off: 24, Size: 2, Kind: U16, Default: le16(0x0010)},
		{Name: "ownerPolicy", Off: 26, Size: 50, Kind: TPM2B, Default: rep(0, 50)},
		{Name: "endorsementPolicy", Off: 76, Size: 50, Kind: TPM2B, Default: rep(0, 50)},
		{Name: "lockoutPolicy", Off: 126, Size: 50, Kind: TPM2B, Default: rep(0, 50)},
		{Name: "ownerAuth", Off: 176, Size: 50, Kind: Auth, Default: rep(0, 50)},
		{Name: "endorsementAuth", Off: 226, Size: 50, Kind: Auth, Default: rep(0, 50)},
		{Name: "lockoutAuth", Off: 276, Size: 50, Kind: Auth, Default: rep(0, 50)},
		{Name: "EPSeed", Off: 326, Size: 66, Kind: Seed, Random: true},
		{Name: "SPSeed", Off: 392, Size: 66, Kind: Seed, Random: true},
		{Name: "PPSeed", Off: 458, Size: 66, Kind: Seed, Random: true},
		{Name: "phProof", Off: 524, Size: 66, Kind: Seed, Random: true},
		{Name: "shProof", Off: 590, Size: 66, Kind: Seed, Random: true},
		{Name: "ehProof", Off: 656, Size: 66, Kind: Seed, Random: true},
		{Name: "totalResetCount", Off: 728, Size: 8, Kind: U64, Default: le64(0)},
		{Name: "resetCount", Off: 736, Size: 4, Kind: U32, Default: le32(0xFFFFFFFF)},
		// PCR_POLICY: hashAlg[1] = TPM_ALG_NULL, empty digests
		{Name: "pcrPolicies", Off: 740, Size: 102, Kind: Bytes, Default: cat(le16(0x0010), rep(0, 100))},
		// TPML_PCR_SELECTION: SHA-1 bank with no PCR, SHA-256 and SHA-384 with PCR 0-23
		{Name: "pcrAllocated", Off: 844, Size: 24, Kind: Bytes, Default: cat(le32(3),
			le16(0x0004), []byte{3, 0x00, 0x00, 0x00},
			le16(0x000B), []byte{3, 0xFF, 0xFF, 0xFF},
			le16(0x000C), []byte{3, 0xFF, 0xFF, 0xFF}, rep(0, 2))},
		{Name: "ppList", Off: 868, Size: 15, Kind: Bytes, Default: cat([]byte{0x00, 0x20}, rep(0, 13))},
		{Name: "failedTries", Off: 884, Size: 4, Kind: U32, Default: le32(0)},
		{Name: "maxTries", Off: 888, Size: 4, Kind: U32, Default: le32(3)},
		{Name: "recoveryTime", Off: 892, Size: 4, Kind: U32, Default: le32(1000)},
		{Name: "lockoutRecovery", Off: 896, Size: 4, Kind: U32, Default: le32(1000)},
		{Name: "lockOutAuthEnabled", Off: 900, Size: 4, Kind: U32, Default: le32(1)},
		{Name: "orderlyState", Off: 904, Size: 2, Kind: U16, Default: le16(0)},
		{Name: "auditCommands", Off: 906, Size: 15, Kind: Bytes, Default: cat(rep(0, 3), []byte{0x80}, rep(0, 11))},
		{Name: "auditHashAlg", Off: 922, Size: 2, Kind: U16, Default: le16(0x000C)},
		{Name: "auditCounter", Off: 928, Size: 8, Kind: U64, Default: le64(0)},
		{Name: "algorithmSet", Off: 936, Size: 4, Kind: U32, Default: le32(0xFFFFFFFF)},
		{Name: "firmwareV1", Off: 940, Size: 4, Kind: U32}, // from Profile.FirmwareV1
		{Name: "firmwareV2", Off: 944, Size: 4, Kind: U32}, // from Profile.FirmwareV2
		{Name: "timeEpoch", Off: 948, Size: 4, Kind: U32, Default: le32(0xFFFFFFFF)},
	},
}

// stateResetData183 is STATE_RESET_DATA; TPM_Manufacture leaves it erased
// (0xFF), TPM2_Startup fills it.
var stateResetData183 = Region{
	Name: "STATE_RESET_DATA", Off: 952, Size: 424, Fill: 0xFF,
	Fields: []Field{
		{Name: "nullProof", Off: 0, Size: 66, Kind: Seed},
		{Name: "nullSeed", Off: 66, Size: 66, Kind: Seed},
		{Name: "clearCount", Off: 132, Size: 4, Kind: U32},
		{Name: "objectContextID", Off: 136, Size: 8, Kind: U64},
		{Name: "contextArray", Off: 144, Size: 128, Kind: Bytes},
		{Name: "contextCounter", Off: 272, Size: 8, Kind: U64},
		{Name: "commandAuditDigest", Off: 280, Size: 50, Kind: TPM2B},
		{Name: "restartCount", Off: 332, Size: 4, Kind: U32},
		{Name: "pcrCounter", Off: 336, Size: 4, Kind: U32},
		{Name: "commitCounter", Off: 344, Size: 8, Kind: U64},
		{Name: "commitNonce", Off: 352, Size: 50, Kind: Auth},
		{Name: "commitArray", Off: 402, Size: 16, Kind: Bytes},
	},
}

var stateClearFields183 = []Field{
	{Name: "shEnable", Off: 0, Size: 4, Kind: U32},
	{Name: "ehEnable", Off: 4, Size: 4, Kind: U32},
	{Name: "phEnableNV", Off: 8, Size: 4, Kind: U32},
	{Name: "platformAlg", Off: 12, Size: 2, Kind: U16},
	{Name: "platformPolicy", Off: 14, Size: 50, Kind: TPM2B},
	{Name: "platformAuth", Off: 64, Size: 50, Kind: Auth},
	{Name: "pcrSave", Off: 116, Size: 1604, Kind: Bytes},
	{Name: "pcrAuthValues", Off: 1720, Size: 50, Kind: Bytes},
	{Name: "act_0", Off: 1770, Size: 50, Kind: Bytes},
	{Name: "act_A", Off: 1820, Size: 50, Kind: Bytes},
}

func orderlyData(off int) Region {
	return Region{
		Name: "ORDERLY_DATA", Off: off, Size: 240, Fill: 0x00,
		Fields: []Field{
			{Name: "clock", Off: 0, Size: 8, Kind: U64, Default: le64(0)},
			{Name: "clockSafe", Off: 8, Size: 1, Kind: U8, Default: []byte{1}},
			{Name: "drbgState.reseedCounter", Off: 16, Size: 8, Kind: U64, Default: le64(8)},
			{Name: "drbgState.magic", Off: 24, Size: 4, Kind: U32, Default: le32(0x47425244)}, // "DRBG"
			{Name: "drbgState.seed", Off: 32, Size: 48, Kind: Secret, Random: true},
			{Name: "drbgState.lastValue", Off: 80, Size: 16, Kind: Secret, CopyFrom: "drbgState.seed", CopyOff: 32},
			{Name: "selfHealTimer", Off: 96, Size: 8, Kind: U64},
			{Name: "lockoutTimer", Off: 104, Size: 8, Kind: U64},
			{Name: "time", Off: 112, Size: 8, Kind: U64},
			{Name: "ACT_0", Off: 120, Size: 56, Kind: Bytes},
			{Name: "ACT_A", Off: 176, Size: 56, Kind: Bytes},
			{Name: "signaledACT", Off: 232, Size: 2, Kind: U16},
			{Name: "preservedSignaled", Off: 234, Size: 2, Kind: U16},
		},
	}
}

func indexRAM(off int) Region {
	return Region{Name: "INDEX_RAM_DATA", Off: off, Size: 512, Fill: 0x00,
		Fields: []Field{{Name: "image", Off: 0, Size: 512, Kind: Bytes}}}
}

var index183 = IndexLayout{Size: 116, NameAlg: 4, Attributes: 8, AuthPolicy: 12, DataSize: 62, AuthValue: 64, DigestBufBytes: 48}

// SVSMPoC is the TCG TPM 1.83 release built with the SVSM proof of
// concept's TpmConfiguration.
var SVSMPoC = register(&Profile{
	Name:         "svsm-poc",
	Description:  "COCONUT-SVSM proof of concept (BlockFS state image), TCG TPM 1.83",
	TCGCommit:    "97c2783f0aeb9018f1e8d1ee5a74cd58536a8002",
	Manufacturer: 0x58595A20, // "XYZ "
	FirmwareV1:   0x20240125,
	FirmwareV2:   0x00120000,
	SpecFamily:   "2.0",
	SpecLevel:    0,
	SpecRevision: 183,
	RSACandidate: "tcg-1.83",
	Container:    "blockfs",
	Switches:     svsmAlgorithms,
	VendorString: "xCG fTPM",
	NVSize:       16384,
	SeedSize:     64,
	Regions: []Region{
		persistentData183,
		stateResetData183,
		{Name: "STATE_CLEAR_DATA", Off: 1376, Size: 1872, Fill: 0xFF, Fields: stateClearFields183},
		orderlyData(3248),
		indexRAM(3488),
	},
	DynamicStart:      4000,
	Index:             index183,
	EvictObjectSize:   2112,
	CounterIndexSize:  128,
	MinEvictObjects:   2,
	MinCounterIndices: 8,
	MaxNVIndexSize:    2048,
	TerminatorSize:    12,
	FreeFill:          0xFF,
})

// SVSM2026 is the TCG TPM of February 2026 built with upstream SVSM's
// TpmConfiguration: STATE_CLEAR_DATA gains readOnly, moving everything
// after it by 4 bytes.
var SVSM2026 = register(&Profile{
	Name:         "svsm-2026",
	Description:  "upstream COCONUT-SVSM 2026, TCG TPM 1.84 development (3b1f0e6)",
	TCGCommit:    "3b1f0e623f244abe2015df9e3ba86de5c9118524",
	Manufacturer: 0x58595A20,
	FirmwareV1:   0x20250320,
	FirmwareV2:   0x00000000,
	SpecFamily:   "2.0",
	SpecLevel:    0,
	SpecRevision: 184,
	RSACandidate: "tcg-1.84",
	Container:    "cocoonfs",
	Attestation:  true,
	Switches:     svsmAlgorithms,
	VendorString: "xCG fTPM",
	NVSize:       16384,
	SeedSize:     64,
	Regions: []Region{
		persistentData183,
		stateResetData183,
		{Name: "STATE_CLEAR_DATA", Off: 1376, Size: 1876, Fill: 0xFF, Fields: append(append([]Field(nil), stateClearFields183...),
			Field{Name: "readOnly", Off: 1872, Size: 4, Kind: U32})},
		orderlyData(3252),
		indexRAM(3492),
	},
	DynamicStart:      4004,
	Index:             index183,
	EvictObjectSize:   2112,
	CounterIndexSize:  128,
	MinEvictObjects:   2,
	MinCounterIndices: 8,
	MaxNVIndexSize:    2048,
	TerminatorSize:    12,
	FreeFill:          0xFF,
})

// svsmAlgorithms are the algorithm switches of both SVSM TPM builds
// (measured: tpm/layout/poc.txt and upstream.txt agree).
var svsmAlgorithms = map[string]bool{
	"ALG_SHA1": true, "ALG_SHA256": true, "ALG_SHA384": true, "ALG_SHA512": false, "ALG_SM3_256": false,
	"RSA_1024": true, "RSA_2048": true, "RSA_3072": true, "RSA_4096": true,
	"ECC_NIST_P192": true, "ECC_NIST_P224": true, "ECC_NIST_P256": true, "ECC_NIST_P384": true, "ECC_NIST_P521": true,
	"ECC_SM2_P256": true,
}
