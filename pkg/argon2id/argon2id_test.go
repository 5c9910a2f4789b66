package argon2id

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestKey(t *testing.T) {
	t.Parallel()
	p := Params{Time: 2, MemoryKiB: 64, Threads: 2, Salt: bytes.Repeat([]byte{7}, SaltSize)}
	got := p.Key([]byte("secret"), 32)
	if want := argon2.IDKey([]byte("secret"), p.Salt, 2, 64, 2, 32); !bytes.Equal(got, want) {
		t.Errorf("Key = %x; want argon2.IDKey's %x", got, want)
	}
	other := p
	other.Salt = bytes.Repeat([]byte{8}, SaltSize)
	if bytes.Equal(other.Key([]byte("secret"), 32), got) {
		t.Error("Key ignores the salt")
	}
}

// TestKeyRefusesTooManyThreads: a count over 255 would wrap around in argon2's uint8.
func TestKeyRefusesTooManyThreads(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Key with 257 threads did not panic")
		}
	}()
	Params{Time: 1, MemoryKiB: 8 * 257, Threads: 257, Salt: make([]byte, SaltSize)}.Key([]byte("x"), 32)
}
