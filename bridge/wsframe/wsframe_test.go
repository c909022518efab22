package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Fin: true, Opcode: Text},
		{Fin: true, Opcode: Binary, Length: 125},
		{Opcode: Binary, Length: 126, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{Fin: true, Opcode: Continuation, Length: 0xffff},
		{Fin: true, Opcode: Binary, Length: 0x10000, RSV: 0x40},
		{Fin: true, Opcode: Ping, Length: 5, Masked: true, Mask: [4]byte{9, 9, 9, 9}},
		{Fin: true, Opcode: Binary, Length: 1 << 40},
	} {
		b := AppendHeader(nil, h)
		got, err := ReadHeader(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || got != h {
			t.Errorf("%+v: read back %+v, %v (% x)", h, got, err, b)
		}
	}
}

func TestReadHeaderErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"empty":           {nil, io.EOF},
		"one byte":        {[]byte{0x82}, io.ErrUnexpectedEOF},
		"short length":    {[]byte{0x82, 126, 1}, io.ErrUnexpectedEOF},
		"short mask":      {[]byte{0x82, 0x81, 1, 2}, io.ErrUnexpectedEOF},
		"length top bit":  {[]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, ErrLength},
		"after the first": {[]byte{0x82, 127}, io.ErrUnexpectedEOF},
	} {
		_, err := ReadHeader(bufio.NewReader(bytes.NewReader(tc.in)))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestMask(t *testing.T) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	for n := range 40 {
		p := bytes.Repeat([]byte{0x5a}, n)
		Mask(p, key)
		for i := range p {
			if p[i] != 0x5a^key[i%4] {
				t.Fatalf("len %d byte %d: %x", n, i, p[i])
			}
		}
		Mask(p, key)
		if !bytes.Equal(p, bytes.Repeat([]byte{0x5a}, n)) {
			t.Fatalf("len %d: masking twice does not restore", n)
		}
	}
}

// TestAcceptKey is RFC 6455's own example (section 1.3).
func TestAcceptKey(t *testing.T) {
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatal(got)
	}
}

// FuzzReadHeader: any input reads without panicking, and what reads as a
// header in its shortest form encodes back to the same bytes.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte{0x82, 0x85, 1, 2, 3, 4})
	f.Add([]byte{0x01, 126, 0x01, 0x00})
	f.Add([]byte{0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		h, err := ReadHeader(br)
		if err != nil {
			return
		}
		if h.Length < 0 {
			t.Fatalf("negative length %d", h.Length)
		}
		used := len(in) - br.Buffered()
		if b := AppendHeader(nil, h); len(b) == used && !bytes.Equal(b, in[:used]) {
			t.Fatalf("read % x as %+v, which encodes as % x", in[:used], h, b)
		}
	})
}
