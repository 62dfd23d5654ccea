package fleet

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

const fuzzManifest = "/srv/fleet/manifest.csv"

// fuzzCheck checks rows as Check does, without reading key files (the
// fuzzer's paths are not the test's to open).
func fuzzCheck(vms []VM) error {
	c := append([]VM(nil), vms...)
	for i := range c {
		if c[i].KeyFile != "-" {
			c[i].KeyFile = ""
		}
	}
	return Check(fuzzManifest, c)
}

func allUTF8(fields ...string) bool {
	for _, f := range fields {
		if !utf8.ValidString(f) {
			return false
		}
	}
	return true
}

// rows strips what the format does not carry (the line numbers).
func rows(vms []VM) []VM {
	out := make([]VM, len(vms))
	for i, vm := range vms {
		vm.Line = 0
		out[i] = vm
	}
	return out
}

// FuzzParseManifest parses arbitrary manifests, CSV or JSON lines: errors
// name the manifest; what parses has rows on increasing lines; rows that
// pass the checks have names that are safe as directory names; and the
// rows written back as CSV and as JSON lines parse to the same rows.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("name,profile,container,size,ek,key_file\nvm-1,svsm-poc,blockfs,16M,rsa2048,\n# comment\nvm-2,svsm-2026,cocoonfs,,ecc-p256,/k\n"))
	f.Add([]byte(" Name , EK\n\"vm 3\",\"rsa2048,ecc-p256\"\n\nvm.4,\n"))
	f.Add([]byte("{\"name\":\"vm-1\",\"size\":1048576}\n\n{\"name\":\"vm-2\",\"profile\":\"svsm-2026\",\"key_file\":\"/k\"}\n"))
	f.Add([]byte("{\"name\":\"a\"}\nnull\n[1]\n"))
	f.Add([]byte("name,size\nvm1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		vms, err := parseManifest(fuzzManifest, data)
		if err != nil {
			if vms != nil || !strings.HasPrefix(err.Error(), fuzzManifest+": ") {
				t.Fatalf("error does not name the manifest: %v", err)
			}
			return
		}
		if len(vms) == 0 {
			t.Fatal("no rows and no error")
		}
		for i, vm := range vms {
			if vm.Line < 1 || (i > 0 && vm.Line <= vms[i-1].Line) {
				t.Fatalf("row %d on line %d after line %d", i, vm.Line, vms[max(i-1, 0)].Line)
			}
		}
		if fuzzCheck(vms) != nil {
			return
		}
		seen := map[string]bool{}
		for _, vm := range vms {
			n := vm.Name
			if n == "" || len(n) > 128 || n == "." || n == ".." || filepath.Base(n) != n || strings.ContainsAny(n, "/\\\x00 \t\r\n") ||
				n[0] == '.' || n[0] == '-' || seen[n] || reserved[n] {
				t.Fatalf("checked row has name %q", n)
			}
			seen[n] = true
		}

		// Written back as JSON lines (which carry only UTF-8: other bytes
		// of a CSV field are left to the column's own check).
		var jl bytes.Buffer
		for _, vm := range vms {
			if !allUTF8(vm.Name, vm.Profile, vm.Container, vm.Size, vm.EK, vm.KeyFile) {
				jl.Reset()
				break
			}
			b, err := json.Marshal(vm)
			if err != nil {
				t.Fatal(err)
			}
			jl.Write(append(b, '\n'))
		}
		if jl.Len() > 0 {
			back, err := parseManifest(fuzzManifest, jl.Bytes())
			if err != nil || !reflect.DeepEqual(rows(back), rows(vms)) {
				t.Fatalf("rows written as JSON lines parse to %#v, %v; want %#v", back, err, vms)
			}
		}

		// Written back as CSV (encoding/csv reads a quoted \r\n as \n, so
		// fields with a carriage return do not survive it).
		for _, vm := range vms {
			if strings.Contains(vm.Name+vm.Profile+vm.Container+vm.Size+vm.EK+vm.KeyFile, "\r") {
				return
			}
		}
		var cb bytes.Buffer
		w := csv.NewWriter(&cb)
		w.Write([]string{"name", "profile", "container", "size", "ek", "key_file"})
		for _, vm := range vms {
			w.Write([]string{vm.Name, vm.Profile, vm.Container, vm.Size, vm.EK, vm.KeyFile})
		}
		w.Flush()
		back, err := parseManifest(fuzzManifest, cb.Bytes())
		if err != nil || !reflect.DeepEqual(rows(back), rows(vms)) {
			t.Fatalf("rows written as CSV parse to %#v, %v; want %#v", back, err, vms)
		}
	})
}
