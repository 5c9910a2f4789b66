package e2ee

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// TestWireFormatTagTable checks the field tag table of docs/wire-format.md section 2:
// every row's bytes are the tags of its field number, and every field of every message
// of the wire format has a row.
func TestWireFormatTagTable(t *testing.T) {
	doc, err := os.ReadFile(vectortest.WireFormatDoc)
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "Field tags used below, as bytes:")
	if start < 0 {
		t.Fatal("docs/wire-format.md has no field tag table")
	}
	section = section[start:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	rows := regexp.MustCompile("(?m)^\\| (\\d+) \\| `0x([0-9a-f]{2})` \\| `0x([0-9a-f]{2})` \\|$").FindAllStringSubmatch(section, -1)
	listed := map[protowire.Number]bool{}
	for _, r := range rows {
		n, _ := strconv.Atoi(r[1])
		num := protowire.Number(n)
		for _, c := range []struct {
			typ protowire.Type
			hex string
		}{{protowire.VarintType, r[2]}, {protowire.BytesType, r[3]}} {
			if got := fmt.Sprintf("%02x", protowire.AppendTag(nil, num, c.typ)); got != c.hex {
				t.Errorf("field %d wire type %d: the table says 0x%s; the tag is 0x%s", n, c.typ, c.hex, got)
			}
		}
		listed[num] = true
	}
	for _, file := range []protoreflect.FileDescriptor{envelopev1.File_umbra_envelope_v1_envelope_proto, envelopev1.File_umbra_envelope_v1_keystore_proto} {
		msgs := file.Messages()
		for i := range msgs.Len() {
			fields := msgs.Get(i).Fields()
			for j := range fields.Len() {
				if f := fields.Get(j); !listed[f.Number()] {
					t.Errorf("%s field %d (%s) has no row in the field tag table", msgs.Get(i).FullName(), f.Number(), f.Name())
				}
			}
		}
	}
	if len(rows) == 0 {
		t.Fatal("the field tag table has no rows")
	}
}
