package authsvc

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/parleychat/parley/server/internal/auth"
)

// hashMemoryShare is the share of the memory this process may use that
// password hashes in flight may hold: a login burst must leave the rest
// to chat.
const hashMemoryShare = 8

// maxHashMemoryBudget caps the derived budget: past a few hashes the cores,
// not memory, are what bounds the logins a server can check.
const maxHashMemoryBudget = 1 << 30

// HashMemoryBudget derives the default memory budget of the password
// hashes in flight: an eighth of what this process may use, which is the
// least of the Go memory limit (GOMEMLIMIT), the cgroup's memory limit
// and the machine's available memory (Linux), between one hash
// (auth.HashMemory) and 1 GiB. Where none can be read it is
// auth.DefaultHashMemoryBudget. It reads /proc and /sys once per call.
func HashMemoryBudget() int64 {
	avail := availableMemory()
	if avail <= 0 {
		return auth.DefaultHashMemoryBudget
	}
	return min(max(avail/hashMemoryShare, auth.HashMemory), maxHashMemoryBudget)
}

// availableMemory returns the bytes this process may use, or 0 if unknown.
func availableMemory() int64 {
	avail := int64(math.MaxInt64)
	if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < avail {
		avail = lim
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && n < avail {
			avail = n // "max" (no limit) does not parse
		}
	}
	if n := memAvailable(); n > 0 && n < avail {
		avail = n
	}
	if avail == math.MaxInt64 {
		return 0
	}
	return avail
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes; 0 if it
// cannot.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return n << 10
			}
		}
	}
	return 0
}
