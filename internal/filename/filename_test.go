package filename

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestDisplay(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 200) // 400 bytes
	for _, tt := range []struct{ in, want string }{
		{"notes.txt", "notes.txt"},
		{"résumé 2026.pdf", "résumé 2026.pdf"},
		{"../../etc/passwd", "passwd"},
		{"..", Fallback},
		{"../", Fallback},
		{`C:\Users\me\evil.exe`, "evil.exe"},
		{`..\..\boot.ini`, "boot.ini"},
		{"a/b\\c/d.txt", "d.txt"},
		{"nul\x00byte.txt", "nulbyte.txt"},
		{"line\r\nbreak.txt", "linebreak.txt"},
		{"tab\tand\x7fdel\u0085nel.txt", "tabanddelnel.txt"},
		{"invoice\u202Efdp.exe", "invoicefdp.exe"}, // right-to-left override
		{"zero\u200bwidth\ufeff.txt", "zerowidth.txt"},
		{"sep\u2028arated.txt", "separated.txt"},
		{"bad\xffutf8.txt", "bad\uFFFDutf8.txt"},
		{"  .hidden.  ", "hidden"},
		{"", Fallback},
		{"\x00\x01", Fallback},
		{long + ".txt", strings.Repeat("é", 125) + ".txt"},
		{long, strings.Repeat("é", 127)},
	} {
		if got := Display(tt.in); got != tt.want {
			t.Errorf("Display(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzDisplay checks the promises of Display on any input: a non-empty,
// valid UTF-8 name of at most MaxLen bytes, with no separator, control or
// format character, no leading or trailing space or dot, and stable when
// reduced again.
func FuzzDisplay(f *testing.F) {
	for _, s := range []string{"a.txt", "../../x", `a\b`, "\x00", "\u202e", strings.Repeat("ab.", 100), "é\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Display(in)
		switch {
		case got == "" || len(got) > MaxLen || !utf8.ValidString(got):
			t.Fatalf("Display(%q) = %q: empty, too long or not UTF-8", in, got)
		case strings.ContainsAny(got, `/\`):
			t.Fatalf("Display(%q) = %q keeps a path separator", in, got)
		case strings.TrimLeft(got, " .") != got || strings.TrimRight(got, " .") != got:
			t.Fatalf("Display(%q) = %q starts or ends with a space or dot", in, got)
		case Display(got) != got:
			t.Fatalf("Display is not idempotent on %q: %q then %q", in, got, Display(got))
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
				t.Fatalf("Display(%q) = %q keeps %U", in, got, r)
			}
		}
	})
}
