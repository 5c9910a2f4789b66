package boltdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
)

// CheckFile reads the bbolt file at path the way bbolt would, but through ordinary
// reads instead of the memory map, and reports the first damage it finds. bbolt trusts
// its pages: a file shorter than its meta page says faults (SIGBUS) when a page beyond
// the end is touched, and a damaged page header or element panics, sometimes in a
// goroutine of bbolt's own (the freelist rebuild of a NoFreelistSync file), where no
// recover can reach it, and a page that points back at its ancestor recurses until the
// stack overflows. CheckFile is the guard against all three: Open calls it before bbolt
// maps the file, so that a file which passes it can be opened and walked by bbolt
// without faults or panics.
//
// It mirrors what bbolt v1.5 itself checks (tx.Check and the freelist rebuild): both
// meta pages, by bbolt's rules (magic, version, checksum, the highest valid txid); the
// file's size against the high-water page id; every page reachable from the root, each
// only once, its header, its elements and keys inside the page, its keys in order
// within the page and within the range of its parent; nested and inline buckets; the
// freelist. It reads every reachable page once, which costs about one sequential read
// of the file's live pages when the file is opened.
func CheckFile(path string) (FileStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileStats{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return FileStats{}, err
	}
	m, err := readMeta(f, fi.Size())
	if err != nil {
		return FileStats{}, err
	}
	c := &checker{r: f, pageSize: uint64(m.pageSize), hwm: m.pgid, reachable: newBitset(m.pgid)}
	c.reachable.set(0)
	c.reachable.set(1)
	if err := c.freelist(m.freelist); err != nil {
		return FileStats{}, err
	}
	if err := c.tree(m.root, 0, "", nil, nil); err != nil {
		return FileStats{}, err
	}
	return FileStats{PageSize: int(m.pageSize), Pages: m.pgid, Reachable: c.pages, Size: fi.Size()}, nil
}

// FileStats describe a bbolt file that CheckFile found sound.
type FileStats struct {
	PageSize int
	// Pages is the high-water page id: the pages the file holds, live or free.
	Pages uint64
	// Reachable is how many of them the tree and the freelist use.
	Reachable uint64
	Size      int64
}

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), in the machine's byte order
// as bbolt writes it.
const (
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	metaSize         = 64
	metaSumOffset    = 56 // the checksum covers the meta's bytes before it

	boltMagic   = 0xED0CDAED
	boltVersion = 2

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	noFreelist = ^uint64(0)
)

var order = binary.NativeEndian

// meta is a bbolt meta page's content.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// parseMeta decodes and validates the meta in a meta page's bytes, by bbolt's rules.
func parseMeta(p []byte) (meta, error) {
	if len(p) < pageHeaderSize+metaSize {
		return meta{}, errors.New("too short")
	}
	b := p[pageHeaderSize : pageHeaderSize+metaSize]
	switch {
	case order.Uint32(b[0:]) != boltMagic:
		return meta{}, errors.New("not a bbolt meta page (bad magic)")
	case order.Uint32(b[4:]) != boltVersion:
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", order.Uint32(b[4:]), boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:metaSumOffset])
	if h.Sum64() != order.Uint64(b[metaSumOffset:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	return meta{
		pageSize: order.Uint32(b[8:]),
		root:     order.Uint64(b[16:]),
		freelist: order.Uint64(b[32:]),
		pgid:     order.Uint64(b[40:]),
		txid:     order.Uint64(b[48:]),
	}, nil
}

// readMeta reads both meta pages and returns the one bbolt would use: the valid one with
// the highest txid. Like bbolt, it finds the second meta page at the page size the first
// names, or, when the first is damaged, by trying each page size bbolt supports. It
// refuses a file shorter than the chosen meta's high-water mark.
func readMeta(r io.ReaderAt, size int64) (meta, error) {
	if size < 2*1024 {
		return meta{}, fmt.Errorf("the file is %d bytes, too short for bbolt's two meta pages", size)
	}
	read := func(off int64) []byte {
		buf := make([]byte, pageHeaderSize+metaSize)
		if n, _ := r.ReadAt(buf, off); n < len(buf) {
			return nil
		}
		return buf
	}
	m0, err0 := parseMeta(read(0))
	var m1 meta
	var err1 error = errors.New("not found")
	if err0 == nil {
		m1, err1 = parseMeta(read(int64(m0.pageSize)))
	} else {
		for i := 0; i <= 14; i++ {
			pos := int64(1024) << i
			if pos >= size-1024 {
				break
			}
			if m1, err1 = parseMeta(read(pos)); err1 == nil {
				break
			}
		}
	}
	var m meta
	switch {
	case err0 != nil && err1 != nil:
		return meta{}, fmt.Errorf("both meta pages are damaged (first: %v; second: %v)", err0, err1)
	case err1 != nil || err0 == nil && m0.txid >= m1.txid:
		m = m0
	default:
		m = m1
	}
	ps := uint64(m.pageSize)
	switch {
	case ps < 1024 || ps > 1<<24 || ps&(ps-1) != 0:
		return meta{}, fmt.Errorf("meta page names a page size of %d bytes", ps)
	case m.pgid < 2:
		return meta{}, fmt.Errorf("meta page names a high-water page id of %d", m.pgid)
	case m.pgid > uint64(size)/ps:
		return meta{}, fmt.Errorf("the file is %d bytes but its meta page (txid %d) says it holds %d pages of %d bytes (%d bytes): it was cut short",
			size, m.txid, m.pgid, ps, m.pgid*ps)
	case m.root < 2 || m.root >= m.pgid:
		return meta{}, fmt.Errorf("meta page names root page %d, outside the file's pages 2..%d", m.root, m.pgid-1)
	case m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		return meta{}, fmt.Errorf("meta page names freelist page %d, outside the file's pages 2..%d", m.freelist, m.pgid-1)
	}
	return m, nil
}

// checker walks a file's pages.
type checker struct {
	r         io.ReaderAt
	pageSize  uint64
	hwm       uint64
	reachable bitset
	freed     bitset // nil when the freelist is not in the file (NoFreelistSync)
	pages     uint64
	// bufs holds one page buffer per depth of the walk, reused: a parent's keys stay
	// valid while its children are read.
	bufs [][]byte
}

// page reads page id (with its overflow pages) into the buffer of depth, checks that it
// lies inside the file and says it is page id, and marks it reachable.
func (c *checker) page(id uint64, depth int, bucket string) ([]byte, uint16, error) {
	where := pageName(id, bucket)
	if id < 2 || id >= c.hwm {
		return nil, 0, fmt.Errorf("%s is outside the file's pages 2..%d", where, c.hwm-1)
	}
	var hdr [pageHeaderSize]byte
	if _, err := c.r.ReadAt(hdr[:], int64(id*c.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", where, err)
	}
	if got := order.Uint64(hdr[0:]); got != id {
		return nil, 0, fmt.Errorf("%s: its header says it is page %d", where, got)
	}
	flags, overflow := order.Uint16(hdr[8:]), uint64(order.Uint32(hdr[12:]))
	if overflow >= c.hwm-id {
		return nil, 0, fmt.Errorf("%s: %d overflow pages run past the file's last page %d", where, overflow, c.hwm-1)
	}
	if c.freed != nil && c.freed.has(id) {
		return nil, 0, fmt.Errorf("%s is in use and also on the freelist", where)
	}
	for i := id; i <= id+overflow; i++ {
		if c.reachable.has(i) {
			return nil, 0, fmt.Errorf("%s: page %d is referenced twice", where, i)
		}
		c.reachable.set(i)
	}
	c.pages += overflow + 1
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, nil)
	}
	n := (overflow + 1) * c.pageSize
	if uint64(cap(c.bufs[depth])) < n {
		c.bufs[depth] = make([]byte, n)
	}
	buf := c.bufs[depth][:n]
	if _, err := c.r.ReadAt(buf, int64(id*c.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", where, err)
	}
	return buf, flags, nil
}

// freelist checks the freelist page, when the file keeps one, and records the free pages.
func (c *checker) freelist(id uint64) error {
	if id == noFreelist {
		return nil
	}
	p, flags, err := c.page(id, 0, "")
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags != freelistPageFlag {
		return fmt.Errorf("freelist page %d has page type %#x", id, flags)
	}
	start, count := uint64(pageHeaderSize), uint64(order.Uint16(p[10:]))
	if count == 0xFFFF {
		if len(p) < pageHeaderSize+8 {
			return fmt.Errorf("freelist page %d is too short for its count", id)
		}
		count, start = order.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > (uint64(len(p))-start)/8 {
		return fmt.Errorf("freelist page %d lists %d pages, more than it can hold", id, count)
	}
	c.freed = newBitset(c.hwm)
	for i := range count {
		free := order.Uint64(p[start+8*i:])
		switch {
		case free < 2 || free >= c.hwm:
			return fmt.Errorf("freelist page %d lists page %d, outside the file's pages 2..%d", id, free, c.hwm-1)
		case c.freed.has(free):
			return fmt.Errorf("freelist page %d lists page %d twice", id, free)
		case c.reachable.has(free):
			return fmt.Errorf("freelist page %d lists page %d, which is in use", id, free)
		}
		c.freed.set(free)
	}
	return nil
}

// tree checks the b+tree under page id, whose keys must lie in [minKey, maxKeyOpen), and
// returns the greatest key in it, as bbolt's recursivelyCheckPageKeyOrder does.
func (c *checker) tree(id uint64, depth int, bucket string, minKey, maxKeyOpen []byte) error {
	_, err := c.subtree(id, depth, bucket, minKey, maxKeyOpen)
	return err
}

func (c *checker) subtree(id uint64, depth int, bucket string, minKey, maxKeyOpen []byte) ([]byte, error) {
	if depth > 64 {
		return nil, fmt.Errorf("%s: the tree is nested deeper than any bbolt file", pageName(id, bucket))
	}
	p, flags, err := c.page(id, depth, bucket)
	if err != nil {
		return nil, err
	}
	where := pageName(id, bucket)
	count := int(order.Uint16(p[10:]))
	switch flags {
	case branchPageFlag:
		keys, err := elements(p, count)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		running := minKey
		var maxInSubtree []byte
		for i, k := range keys {
			if err := keyOrder(i, k.key, running, maxKeyOpen); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			upper := maxKeyOpen
			if i < len(keys)-1 {
				upper = keys[i+1].key
			}
			child := order.Uint64(p[k.elem+8:])
			if maxInSubtree, err = c.subtree(child, depth+1, bucket, k.key, upper); err != nil {
				return nil, err
			}
			running = maxInSubtree
		}
		return maxInSubtree, nil // a copy: the buffer it came from is reused
	case leafPageFlag:
		elems, err := elements(p, count)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		running := minKey
		for i, e := range elems {
			if err := keyOrder(i, e.key, running, maxKeyOpen); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			running = e.key
			if e.flags&bucketLeafFlag == 0 {
				continue
			}
			name := bucketName(bucket, e.key)
			if len(e.value) < bucketHeaderSize {
				return nil, fmt.Errorf("%s: bucket %s has a header of %d bytes", where, name, len(e.value))
			}
			if root := order.Uint64(e.value); root != 0 {
				if err := c.tree(root, depth+1, name, nil, nil); err != nil {
					return nil, err
				}
			} else if err := inlineBucket(e.value[bucketHeaderSize:]); err != nil {
				return nil, fmt.Errorf("%s: inline bucket %s: %w", where, name, err)
			}
		}
		if len(elems) > 0 {
			return bytes.Clone(elems[len(elems)-1].key), nil
		}
		return nil, nil
	}
	return nil, fmt.Errorf("%s has page type %#x, not a branch or leaf page", where, flags)
}

// inlineBucket checks a bucket stored inside its parent's value: a leaf page without
// sub-buckets (bbolt inlines only those).
func inlineBucket(p []byte) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("%d bytes, too short for a page", len(p))
	}
	if flags := order.Uint16(p[8:]); flags != leafPageFlag {
		return fmt.Errorf("page type %#x, not a leaf page", flags)
	}
	elems, err := elements(p, int(order.Uint16(p[10:])))
	if err != nil {
		return err
	}
	for i, e := range elems {
		if e.flags&bucketLeafFlag != 0 {
			return errors.New("holds a bucket, which bbolt never inlines")
		}
		if i > 0 && bytes.Compare(elems[i-1].key, e.key) >= 0 {
			return fmt.Errorf("key %d is not above key %d", i, i-1)
		}
	}
	return nil
}

// element is one element of a page: its offset, key and (leaf) value and flags.
type element struct {
	elem       int
	flags      uint32
	key, value []byte
}

// elements decodes a page's elements, checking that each lies inside the page. An
// element's key is at its own offset plus pos; a leaf's value follows its key.
func elements(p []byte, count int) ([]element, error) {
	if pageHeaderSize+count*elementSize > len(p) {
		return nil, fmt.Errorf("%d elements do not fit in %d bytes", count, len(p))
	}
	branch := order.Uint16(p[8:]) == branchPageFlag
	out := make([]element, count)
	for i := range out {
		off := pageHeaderSize + i*elementSize
		e := element{elem: off}
		var pos, ksize, vsize uint64
		if branch {
			pos, ksize = uint64(order.Uint32(p[off:])), uint64(order.Uint32(p[off+4:]))
		} else {
			e.flags = order.Uint32(p[off:])
			pos, ksize, vsize = uint64(order.Uint32(p[off+4:])), uint64(order.Uint32(p[off+8:])), uint64(order.Uint32(p[off+12:]))
		}
		start := uint64(off) + pos
		if end := start + ksize + vsize; end > uint64(len(p)) {
			return nil, fmt.Errorf("element %d (key %d bytes, value %d bytes at offset %d) runs past the page's %d bytes", i, ksize, vsize, start, len(p))
		}
		e.key, e.value = p[start:start+ksize], p[start+ksize:start+ksize+vsize]
		out[i] = e
	}
	return out, nil
}

// keyOrder applies bbolt's verifyKeyOrder: the first key is at or above the range's
// lower bound, each later one above the one before, and all below the upper bound.
func keyOrder(i int, key, previous, maxKeyOpen []byte) error {
	switch {
	case i == 0 && previous != nil && bytes.Compare(previous, key) > 0:
		return fmt.Errorf("key %d is below its parent's key", i)
	case i > 0 && bytes.Compare(previous, key) >= 0:
		return fmt.Errorf("key %d is not above the key before it", i)
	case maxKeyOpen != nil && bytes.Compare(key, maxKeyOpen) >= 0:
		return fmt.Errorf("key %d is not below the next key of its parent", i)
	}
	return nil
}

func pageName(id uint64, bucket string) string {
	if bucket == "" {
		return "page " + strconv.FormatUint(id, 10)
	}
	return fmt.Sprintf("page %d (bucket %s)", id, bucket)
}

// bucketName names a bucket for messages: its path of names, quoted.
func bucketName(parent string, key []byte) string {
	name := strconv.Quote(string(key))
	if parent == "" {
		return name
	}
	return parent + "/" + name
}

type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
