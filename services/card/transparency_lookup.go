package card

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// tileCaches holds the kt.TileCache of the latest checkpoint a lookup was made at:
// the top tiles of the log and the map at that checkpoint, which never change, read
// once and shared by every lookup at that checkpoint (docs/key-transparency.md,
// "Lookups of many identities"). A lookup whose transaction sees a newer checkpoint
// starts a new cache; one that sees an older checkpoint (it began before the newer
// one was stored) reads without a cache. Nothing needs invalidating: a cache is only
// ever used with the checkpoint it was made for.
type tileCaches struct {
	current atomic.Pointer[checkpointTiles]
}

type checkpointTiles struct {
	size             uint64
	logRoot, mapRoot []byte
	cache            *kt.TileCache
}

// at returns the cache of checkpoint cp; nil when cp is older than the latest cache's.
func (c *tileCaches) at(cp *cardstoragev1.CheckpointRecord) *kt.TileCache {
	for {
		cur := c.current.Load()
		if cur != nil {
			switch {
			case cur.size == cp.GetSize() && bytes.Equal(cur.logRoot, cp.GetLogRoot()) && bytes.Equal(cur.mapRoot, cp.GetMapRoot()):
				return cur.cache
			case cur.size > cp.GetSize():
				return nil
			}
		}
		// The first lookup at a newer checkpoint, or a checkpoint of the same size
		// with other roots (which the store never makes: then the newest one read wins).
		next := &checkpointTiles{size: cp.GetSize(), logRoot: bytes.Clone(cp.GetLogRoot()), mapRoot: bytes.Clone(cp.GetMapRoot()), cache: kt.NewTileCache()}
		if c.current.CompareAndSwap(cur, next) {
			return next.cache
		}
	}
}

// minProofsPerWorker is the smallest share of a batch of lookups worth a goroutine.
const minProofsPerWorker = 64

// inParallel calls prove on n lookups split in contiguous shares, one per core (up to
// GOMAXPROCS, at least minProofsPerWorker each), and returns the first error.
func inParallel(n int, prove func(lo, hi int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n/minProofsPerWorker)
	if workers <= 1 {
		return prove(0, n)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { errs[w] = prove(lo, hi) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// proveCard is the lookup of identity of appID in st at a checkpoint of size entries:
// its proof, and the card its map entry names, read by card (nil when not stored).
func proveCard(st kt.State, leaf func(uint64) ([]byte, error), size uint64, appID, identity string, card func(cardID []byte) (*cardstoragev1.CardRecord, error)) (ProvedCard, error) {
	p, v, err := st.ProveValue(appID, identity, size, leaf)
	if err != nil {
		return ProvedCard{}, fmt.Errorf("card: key transparency lookup of %s: %w", identity, err)
	}
	pc := ProvedCard{Proof: p}
	if cardID := v.GetCardId(); len(cardID) > 0 {
		if pc.Card, err = card(cardID); err == nil && pc.Card == nil {
			err = fmt.Errorf("card: the key transparency map names card %x of %s, which is not stored", cardID, identity)
		}
		if err != nil {
			return ProvedCard{}, err
		}
	}
	return pc, nil
}
