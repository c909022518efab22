// Package wsframe is the RFC 6455 framing /ws speaks: frame headers,
// masking and the handshake's accept key. The bridge's server side and the
// load generator's minimal client both build on it; which frames each
// side accepts (a server wants masked ones, a client unmasked) is the
// caller's rule, not this package's. Independent peers (coder/websocket's
// client, Chromium) check it in the bridge's tests.
package wsframe

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
)

// Opcodes (RFC 6455, section 5.2).
const (
	Continuation byte = 0x0
	Text         byte = 0x1
	Binary       byte = 0x2
	Close        byte = 0x8
	Ping         byte = 0x9
	Pong         byte = 0xa
)

// MaxControlPayload is the largest payload of a control frame.
const MaxControlPayload = 125

// Header is a frame header.
type Header struct {
	Fin    bool
	RSV    byte // the three reserved bits, in their place (mask 0x70)
	Opcode byte
	Masked bool
	Mask   [4]byte
	Length int64
}

// IsControl reports whether the frame is a close, ping or pong (or a
// reserved control opcode).
func (h Header) IsControl() bool { return h.Opcode&0x8 != 0 }

// ErrLength is a 64-bit length with its top bit set, which RFC 6455 forbids.
var ErrLength = errors.New("websocket: frame length has its top bit set")

// ReadHeader reads one frame header. It reads through br's buffer (Peek),
// so an idle reader allocates nothing.
func ReadHeader(br *bufio.Reader) (Header, error) {
	var h Header
	p, err := next(br, 2)
	if err != nil {
		return h, err
	}
	b0, b1 := p[0], p[1]
	h.Fin, h.RSV, h.Opcode = b0&0x80 != 0, b0&0x70, b0&0x0f
	h.Masked = b1&0x80 != 0
	switch n := b1 & 0x7f; n {
	case 126:
		if p, err = rest(br, 2); err != nil {
			return h, err
		}
		h.Length = int64(binary.BigEndian.Uint16(p))
	case 127:
		if p, err = rest(br, 8); err != nil {
			return h, err
		}
		u := binary.BigEndian.Uint64(p)
		if u>>63 != 0 {
			return h, ErrLength
		}
		h.Length = int64(u)
	default:
		h.Length = int64(n)
	}
	if h.Masked {
		if p, err = rest(br, 4); err != nil {
			return h, err
		}
		copy(h.Mask[:], p)
	}
	return h, nil
}

// next returns the next n bytes of br (valid until its next read). Past a
// header's first byte, the end of input is unexpected.
func next(br *bufio.Reader, n int) ([]byte, error) {
	p, err := br.Peek(n)
	if err != nil {
		if err == io.EOF && len(p) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	_, _ = br.Discard(n)
	return p, nil
}

// rest is next for the bytes after a header's first two.
func rest(br *bufio.Reader, n int) ([]byte, error) {
	p, err := next(br, n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return p, err
}

// AppendHeader appends h's encoding to b, with the shortest length form.
func AppendHeader(b []byte, h Header) []byte {
	b0 := h.RSV&0x70 | h.Opcode&0x0f
	if h.Fin {
		b0 |= 0x80
	}
	var m byte
	if h.Masked {
		m = 0x80
	}
	switch n := h.Length; {
	case n < 126:
		b = append(b, b0, m|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, b0, m|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, b0, m|127), uint64(n))
	}
	if h.Masked {
		b = append(b, h.Mask[:]...)
	}
	return b
}

// Mask XORs p with a masking key, eight bytes at a time; masking and
// unmasking are the same. p must start at the payload's first byte.
func Mask(p []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k64)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// AcceptKey is the Sec-WebSocket-Accept answer to a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}
