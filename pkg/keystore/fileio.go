package keystore

// Reading the keystore file within a size limit (it is replaced with
// pkg/internal/atomicfile).

import (
	"fmt"
	"io"
	"os"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
)

// readLimited reads the file at path, refusing one over limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("e2ee: open keystore: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("e2ee: read keystore: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, errorf(e2ee.ErrTooLarge, "keystore file is over %d bytes", limit)
	}
	return data, nil
}
