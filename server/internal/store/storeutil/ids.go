package storeutil

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// IDGen makes message ids: 16 bytes, hex encoded, the first 6 a big-endian
// Unix millisecond time and the other 10 random, like a ULID (both stores
// use this format). Ids sort by creation time; from one IDGen they are
// strictly increasing, because a clock that stalls or steps back reuses
// the last time and increments the random part instead. Across processes
// they are unique by their 80 random bits. The zero IDGen is ready to use.
// Not safe for concurrent use: each store's writer goroutine owns one.
type IDGen struct {
	lastMS int64
	last   [16]byte
}

// Next returns the next id for a message created at now.
func (g *IDGen) Next(now time.Time) string {
	ms := now.UnixMilli()
	if ms > g.lastMS || !g.increment() {
		if ms <= g.lastMS {
			ms = g.lastMS + 1 // the 80-bit random part overflowed: borrow a millisecond
		}
		g.lastMS = ms
		var ts [8]byte
		binary.BigEndian.PutUint64(ts[:], uint64(ms))
		copy(g.last[:6], ts[2:])
		rand.Read(g.last[6:]) // never fails (see crypto/rand.Read)
	}
	return hex.EncodeToString(g.last[:])
}

// increment adds one to the random part, reporting false on overflow.
func (g *IDGen) increment() bool {
	for i := len(g.last) - 1; i >= 6; i-- {
		g.last[i]++
		if g.last[i] != 0 {
			return true
		}
	}
	return false
}
