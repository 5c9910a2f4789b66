package boltdb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// recordSchema has one bucket of sealed string records.
var recordSchema = Schema{
	Version: 1,
	Buckets: [][]byte{[]byte("things"), []byte("index")},
	Records: []RecordBucket{{Name: []byte("things"), New: func() proto.Message { return &wrapperspb.StringValue{} }}},
}

// thingKey and thingValue are the records filledFile writes.
func thingKey(i int) []byte { return fmt.Appendf(nil, "thing-%05d", i) }
func thingValue(i int) string {
	return fmt.Sprintf("value %05d %s", i, strings.Repeat("x", 80))
}

// filledFile writes n records into things (enough for a tree of several leaf pages under
// a branch page), and returns the file's path.
func filledFile(t *testing.T, n int, opts Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := Open(path, recordSchema, opts)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("things"))
		for i := range n {
			if err := PutProto(b, thingKey(i), wrapperspb.String(thingValue(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// layout is where the pages of a test file are.
type layout struct {
	pageSize int64
	meta     meta
	// thingsRoot is the root page of the things bucket (a branch page), and leaf the
	// first leaf page under it.
	thingsRoot, leaf uint64
}

func readLayout(t *testing.T, path string) layout {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := readMeta(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	l := layout{pageSize: int64(m.pageSize), meta: m}
	page := func(id uint64) []byte {
		p := make([]byte, l.pageSize)
		if _, err := f.ReadAt(p, int64(id)*l.pageSize); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := page(m.root)
	elems, err := elements(root, int(order.Uint16(root[10:])))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range elems {
		if string(e.key) == "things" {
			l.thingsRoot = order.Uint64(e.value)
		}
	}
	tr := page(l.thingsRoot)
	if order.Uint16(tr[8:]) != branchPageFlag {
		t.Fatalf("things' root page %d is not a branch page: write more records", l.thingsRoot)
	}
	first, err := elements(tr, int(order.Uint16(tr[10:])))
	if err != nil {
		t.Fatal(err)
	}
	l.leaf = order.Uint64(tr[first[0].elem+8:])
	return l
}

// overwrite writes b at off in the file.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// flip inverts n bytes at off.
func flip(t *testing.T, path string, off int64, n int) { xorBytes(t, path, off, n, 0xFF) }

// rot flips the lowest bit of n bytes at off: bit rot that leaves text still text.
func rot(t *testing.T, path string, off int64, n int) { xorBytes(t, path, off, n, 0x01) }

func xorBytes(t *testing.T, path string, off int64, n int, mask byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := b[off : off+int64(n)]
	for i := range chunk {
		chunk[i] ^= mask
	}
	overwrite(t, path, off, chunk)
}

// damages are the ways a file is damaged below the records: each leaves a file that bbolt
// would panic or fault on.
var damages = []struct {
	name   string
	damage func(t *testing.T, path string, l layout)
	want   string
}{
	{"64 bytes flipped in a leaf page's elements", func(t *testing.T, path string, l layout) {
		flip(t, path, int64(l.leaf)*l.pageSize+pageHeaderSize, 64)
	}, "runs past the page"},
	{"damaged page header", func(t *testing.T, path string, l layout) {
		flip(t, path, int64(l.leaf)*l.pageSize, 8)
	}, "its header says it is page"},
	{"damaged page type", func(t *testing.T, path string, l layout) {
		overwrite(t, path, int64(l.leaf)*l.pageSize+8, []byte{0x44, 0})
	}, "not a branch or leaf page"},
	{"damaged root page", func(t *testing.T, path string, l layout) {
		flip(t, path, int64(l.meta.root)*l.pageSize, 64)
	}, fmt.Sprintf("page %d", 0)[:4]},
	{"branch page pointing at its own page", func(t *testing.T, path string, l layout) {
		overwrite(t, path, int64(l.thingsRoot)*l.pageSize+pageHeaderSize+8, order.AppendUint64(nil, l.thingsRoot))
	}, "referenced twice"},
	{"branch page pointing past the end", func(t *testing.T, path string, l layout) {
		overwrite(t, path, int64(l.thingsRoot)*l.pageSize+pageHeaderSize+8, order.AppendUint64(nil, l.meta.pgid+100))
	}, "outside the file's pages"},
	{"truncated to half its pages", func(t *testing.T, path string, l layout) {
		// bbolt grows a file ahead of its pages; cutting only that slack loses nothing.
		if err := os.Truncate(path, int64(l.meta.pgid)*l.pageSize/2); err != nil {
			t.Fatal(err)
		}
	}, "cut short"},
	{"both meta pages damaged", func(t *testing.T, path string, l layout) {
		flip(t, path, pageHeaderSize, 16)
		flip(t, path, l.pageSize+pageHeaderSize, 16)
	}, "both meta pages are damaged"},
}

// TestOpenRefusesDamagedFiles: each damage is refused by CheckFile and by Open with a
// DamagedError that names the file, never a panic or a fault; the same for a file
// written as messaging writes it (no freelist in the file, whose rebuild on open is
// where bbolt panics in a goroutine of its own).
func TestOpenRefusesDamagedFiles(t *testing.T) {
	for _, opts := range []struct {
		name string
		opts Options
	}{{"default", Options{}}, {"no freelist sync", Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 26}}} {
		for _, tc := range damages {
			t.Run(opts.name+"/"+tc.name, func(t *testing.T) {
				path := filledFile(t, 2000, opts.opts)
				tc.damage(t, path, readLayout(t, path))
				if _, err := CheckFile(path); err == nil {
					t.Error("CheckFile passed a damaged file")
				}
				db, err := Open(path, recordSchema, opts.opts)
				if err == nil {
					db.Close()
					t.Fatal("Open accepted a damaged file")
				}
				var d *DamagedError
				if !errors.As(err, &d) || d.Path != path || !errors.Is(err, errs.ErrDamaged) {
					t.Fatalf("Open: %v, want a DamagedError for %s", err, path)
				}
				msg := err.Error()
				if strings.Contains(msg, "\n") || !strings.Contains(msg, "umbra admin verify --store t --data "+filepath.Dir(path)) ||
					!strings.Contains(msg, "umbra admin restore --store t") {
					t.Errorf("message %q is not one line naming verify and restore", msg)
				}
				if !strings.Contains(msg, tc.want) {
					t.Errorf("message %q does not say %q", msg, tc.want)
				}
			})
		}
	}
}

// TestCheckFilePassesSoundFiles: files of every shape bbolt writes pass, after random
// puts and deletes, with and without the freelist in the file, including nested and
// inline buckets and values that overflow a page; bbolt's own check agrees.
func TestCheckFilePassesSoundFiles(t *testing.T) {
	for _, nofl := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoFreelistSync=%v", nofl), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.db")
			rng := rand.New(rand.NewPCG(1, 2))
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: nofl})
			if err != nil {
				t.Fatal(err)
			}
			for round := range 30 {
				err := db.Update(func(tx *bolt.Tx) error {
					b, err := tx.CreateBucketIfNotExists([]byte("big"))
					if err != nil {
						return err
					}
					for range 200 {
						k := fmt.Appendf(nil, "k%06d", rng.IntN(5000))
						if rng.IntN(3) == 0 {
							if err := b.Delete(k); err != nil {
								return err
							}
							continue
						}
						v := make([]byte, rng.IntN(300))
						if rng.IntN(50) == 0 {
							v = make([]byte, 10000+rng.IntN(20000)) // overflow pages
						}
						if err := b.Put(k, v); err != nil {
							return err
						}
					}
					nested, err := b.CreateBucketIfNotExists([]byte("nested"))
					if err != nil {
						return err
					}
					if err := nested.Put(fmt.Appendf(nil, "n%d", round), []byte("v")); err != nil {
						return err
					}
					small, err := tx.CreateBucketIfNotExists(fmt.Appendf(nil, "small%d", round%5))
					if err != nil {
						return err
					}
					return small.Put([]byte{byte(round)}, []byte("inline"))
				})
				if err != nil {
					t.Fatal(err)
				}
				if round%10 == 9 {
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					if _, err := CheckFile(path); err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
					if db, err = bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: nofl}); err != nil {
						t.Fatal(err)
					}
					err = db.View(func(tx *bolt.Tx) error {
						for err := range tx.Check() {
							return err
						}
						return nil
					})
					if err != nil {
						t.Fatalf("round %d: bbolt: %v", round, err)
					}
				}
			}
			db.Close()
			st, err := CheckFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Reachable == 0 || st.Reachable > st.Pages {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestProtectTurnsFaultsIntoErrors: bbolt walking a file cut short (what CheckFile keeps
// it from doing) faults with SIGBUS; under Protect that is an error naming the file.
func TestProtectTurnsFaultsIntoErrors(t *testing.T) {
	path := filledFile(t, 20000, Options{})
	db, err := bolt.Open(path, 0o600, &bolt.Options{InitialMmapSize: 1 << 26})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	err = Protect(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("things")).ForEach(func(k, v []byte) error { return nil })
		})
	})
	var d *DamagedError
	if !errors.As(err, &d) || d.Path != path {
		t.Fatalf("Protect: %v, want a DamagedError", err)
	}
	if err := Protect(path, func() error { panic("assertion failed") }); !errors.As(err, &d) || !strings.Contains(err.Error(), "assertion failed") {
		t.Errorf("Protect of a panic: %v", err)
	}
	plain := errors.New("permission denied")
	if err := Protect(path, func() error { return plain }); err != plain {
		t.Errorf("Protect changed a plain error: %v", err)
	}
}
