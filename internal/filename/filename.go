// Package filename reduces the file names clients send to safe display
// names. It is the one place that does, for every way a name enters
// Parley: the gRPC UploadFile handler and the bridge's REST upload (which
// cannot share server/internal code), and again when a name leaves in a
// Content-Disposition header, for names stored before it existed.
//
// Everything here is a pure function, safe for concurrent use.
package filename

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest display name, in bytes (the contract's FileInfo
// name limit, and what common file systems accept).
const MaxLen = 255

// Fallback is the display name of a name with nothing displayable left.
const Fallback = "file"

// Display returns name reduced to a safe display name:
//   - invalid UTF-8 becomes U+FFFD;
//   - only the last element of a path is kept, with both / and \ taken as
//     separators, so "../../etc/passwd" and `C:\x\y.txt` lose their
//     directories;
//   - control characters (C0, DEL, C1, including NUL, CR and LF) and
//     invisible format characters (bidirectional overrides such as
//     U+202E, zero-width characters, line and paragraph separators) are
//     removed, so a name cannot break a header or disguise its extension;
//   - leading and trailing spaces and dots are trimmed (no "..", no
//     hidden files, no names Windows would silently alter);
//   - it is cut to MaxLen bytes on a character boundary, keeping a short
//     extension;
//   - an empty result is Fallback.
//
// Display is idempotent: Display(Display(s)) == Display(s).
func Display(name string) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return -1
		}
		return r
	}, name)
	name = strings.Trim(name, " .")
	if len(name) > MaxLen {
		name = truncate(name)
	}
	if name == "" {
		return Fallback
	}
	return name
}

// maxExt is the longest extension truncate keeps.
const maxExt = 16

// truncate cuts name to MaxLen bytes on a rune boundary, keeping its
// extension when that is short, and trims again what the cut exposed.
func truncate(name string) string {
	ext := ""
	if i := strings.LastIndexByte(name, '.'); i > 0 && len(name)-i <= maxExt {
		name, ext = name[:i], name[i:]
	}
	cut := MaxLen - len(ext)
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return strings.Trim(name[:cut], " .") + ext
}
