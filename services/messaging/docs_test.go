package messaging

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestOperationsStatesTheRetentionDefault: docs/operations.md says what --retention
// defaults to, as `umbra serve -h` prints it.
func TestOperationsStatesTheRetentionDefault(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	hours := strings.TrimSuffix(DefaultRetention.Round(time.Hour).String(), "0m0s")
	want := fmt.Sprintf("`--retention` (default `%s`: %d days)", hours, DefaultRetention/(24*time.Hour))
	if !strings.Contains(string(doc), want) {
		t.Errorf("docs/operations.md does not say %s", want)
	}
}
