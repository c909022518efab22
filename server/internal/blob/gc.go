package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Deleting blobs. The blob store does not know what references a blob (the
// message store's file rows do), so the caller passes an InUse function.
// Deletion must not race an upload of the same content into losing its
// blob: an upload records its reference, then Commits (see Staged). So a
// blob is deleted in three steps:
//
//  1. rename it to <id>.trash, so a Commit from then on finds it absent
//     and writes it again;
//  2. ask InUse, which sees every reference recorded before step 1, and so
//     every upload whose Commit found the blob present;
//  3. delete the trash file, or, if the blob is in use after all, rename it
//     back.
//
// A crash between 1 and 3 leaves a trash file, which RemoveUnused settles
// the same way. Two collectors (two nodes sharing the directory) may
// settle one trash file at once: both ask InUse after the rename, so they
// agree, or the later one sees a new reference and its Commit has already
// written the blob again.

// trashSuffix names a blob taken away by Remove while it looks for
// references; Open and Has never see it.
const trashSuffix = ".trash"

// InUse reports which of ids are still referenced (in any order). It must
// read the latest committed state, so that it sees every reference
// recorded before it was called.
type InUse func(ctx context.Context, ids []string) ([]string, error)

// Remove deletes the blobs ids that inUse does not report referenced, as
// described above, and returns how many it deleted. Ids that are not
// stored (already deleted, say by another node) are skipped. On an error
// from inUse every blob is put back.
func (s *Store) Remove(ctx context.Context, ids []string, inUse InUse) (int, error) {
	var taken []string
	for _, id := range ids {
		if !ValidID(id) {
			continue
		}
		err := os.Rename(s.path(id), s.path(id)+trashSuffix)
		switch {
		case err == nil:
			taken = append(taken, id)
		case errors.Is(err, fs.ErrNotExist):
		default:
			// Settle what was taken; the orphan scan retries the rest.
			n, serr := s.settle(ctx, taken, inUse)
			return n, errors.Join(fmt.Errorf("blob: remove %s: %w", id, err), serr)
		}
	}
	return s.settle(ctx, taken, inUse)
}

// settle decides the fate of the trash files of ids: those inUse reports
// referenced are renamed back, the others deleted. It returns how many it
// deleted.
func (s *Store) settle(ctx context.Context, ids []string, inUse InUse) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	used, err := inUse(ctx, ids)
	if err != nil {
		// When in doubt, keep: put everything back.
		used = ids
	}
	keep := make(map[string]bool, len(used))
	for _, id := range used {
		keep[id] = true
	}
	removed := 0
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("blob: looking up references: %w", err))
	}
	for _, id := range ids {
		trash := s.path(id) + trashSuffix
		if keep[id] {
			// Replacing a blob a Commit wrote meanwhile is fine: same
			// plaintext. Gone means another collector settled it.
			if err := os.Rename(trash, s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("blob: restore %s: %w", id, err))
				continue
			}
			if err := syncDir(filepath.Dir(trash)); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		switch err := os.Remove(trash); {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("blob: delete %s: %w", id, err))
		}
	}
	return removed, errors.Join(errs...)
}

// RemoveUnused deletes blobs last written before before that inUse does
// not report referenced (orphans: left by a crash between deleting a file
// row and its blob, or by an upload that never recorded its reference),
// and settles trash files a Remove left behind. It walks the
// subdirectories in order from the one named from ("" for the first),
// whole ones at a time, and stops after the one where it has examined
// limit blobs (limit <= 0: no limit); next is where the following call
// should go on, "" after the last. It returns how many blobs it deleted.
func (s *Store) RemoveUnused(ctx context.Context, before time.Time, inUse InUse, from string, limit int) (next string, removed int, err error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return "", 0, fmt.Errorf("blob: %w", err)
	}
	var subs []string
	for _, e := range entries {
		if e.IsDir() && isSubdir(e.Name()) && e.Name() >= from {
			subs = append(subs, e.Name())
		}
	}
	slices.Sort(subs)
	var old, trash []string
	examined := 0
	for i, sub := range subs {
		if err := ctx.Err(); err != nil {
			return sub, removed, err
		}
		files, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			return sub, removed, fmt.Errorf("blob: %w", err)
		}
		for _, f := range files {
			name := f.Name()
			if !f.Type().IsRegular() || !strings.HasPrefix(name, sub) {
				continue
			}
			if id, ok := strings.CutSuffix(name, trashSuffix); ok && ValidID(id) {
				trash = append(trash, id)
				examined++
				continue
			}
			if !ValidID(name) {
				continue
			}
			examined++
			if info, err := f.Info(); err == nil && info.ModTime().Before(before) {
				old = append(old, name)
			}
		}
		if limit > 0 && examined >= limit && i+1 < len(subs) {
			next = subs[i+1]
			break
		}
	}

	n, err := s.settle(ctx, trash, inUse)
	removed += n
	if err != nil {
		return next, removed, err
	}
	if len(old) == 0 {
		return next, removed, nil
	}
	// Most old blobs are in use: ask first, so that only orphans are taken
	// away (Remove asks again after taking them).
	used, err := inUse(ctx, old)
	if err != nil {
		return next, removed, fmt.Errorf("blob: looking up references: %w", err)
	}
	inUseNow := make(map[string]bool, len(used))
	for _, id := range used {
		inUseNow[id] = true
	}
	orphans := slices.DeleteFunc(old, func(id string) bool { return inUseNow[id] })
	n, err = s.Remove(ctx, orphans, inUse)
	return next, removed + n, err
}

// isSubdir reports whether name is one of the store's subdirectories: two
// lowercase hex digits, the first two of the ids it holds.
func isSubdir(name string) bool {
	return len(name) == 2 && isLowerHex(name[0]) && isLowerHex(name[1])
}
