package sealer

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// SegmentSize is the plaintext size of each stream segment but the last.
const SegmentSize = 64 << 10

// SniffLen is how many leading bytes IsSealedStream needs to decide.
const SniffLen = len(streamMagic) + 1

const (
	// streamMagic starts every sealed stream. The high first byte (as in
	// PNG) makes it unlikely to open a text file, so a store holding both
	// plaintext files (written before a key was configured) and sealed ones
	// can tell them apart.
	streamMagic   = "\x89PRLS"
	streamVersion = 0x01
	streamIDSize  = 16
	encSegSize    = nonceSize + SegmentSize + tagSize
	aadTailSize   = 9 // segment index (8, big endian) | final flag (1)
)

// IsSealedStream reports whether prefix (the first SniffLen bytes of a
// stream, or all of it if shorter) is the start of a stream written by
// SealWriter. It holds for a nil keyring too.
func IsSealedStream(prefix []byte) bool {
	return len(prefix) >= SniffLen &&
		bytes.HasPrefix(prefix, []byte(streamMagic)) && prefix[len(streamMagic)] == streamVersion
}

// SealWriter returns a writer that encrypts everything written to it into
// w under the active key. Close must be called to write the final segment;
// it does not close w. Output:
//
//	magic(5) | version(1) | len(id)(1) | id | stream id(16)
//	then segments: nonce(12) | ciphertext+tag(16)
//
// Each segment holds SegmentSize bytes of plaintext except the last, which
// holds 0..SegmentSize and is flagged final. The header, the segment index
// and the final flag are the additional data of every segment, so
// reordering segments, splicing them between streams, dropping trailing
// segments and appending data are all detected by OpenReader.
//
// On a nil keyring it returns a writer that passes data to w unchanged.
func (k *Keyring) SealWriter(w io.Writer) (io.WriteCloser, error) {
	if k == nil {
		return nopWriteCloser{w}, nil
	}
	hdr := make([]byte, 0, len(streamMagic)+2+len(k.active)+streamIDSize)
	hdr = append(hdr, streamMagic...)
	hdr = append(hdr, streamVersion, byte(len(k.active)))
	hdr = append(hdr, k.active...)
	sid := make([]byte, streamIDSize)
	if _, err := rand.Read(sid); err != nil {
		return nil, fmt.Errorf("sealer: stream id: %w", err)
	}
	hdr = append(hdr, sid...)
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	return &sealWriter{
		w:    w,
		aead: k.aeads[k.active],
		aad:  append(hdr, make([]byte, aadTailSize)...),
		buf:  make([]byte, 0, SegmentSize),
		out:  make([]byte, 0, encSegSize),
	}, nil
}

type sealWriter struct {
	w    io.Writer
	aead cipher.AEAD
	aad  []byte // header followed by aadTailSize scratch bytes
	buf  []byte // pending plaintext, at most SegmentSize
	out  []byte // scratch for one sealed segment
	idx  uint64
	err  error // sticky: after a failed write the stream is unusable
}

func (s *sealWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	for len(p) > 0 {
		// Flush a full buffer only once more data arrives: the last
		// segment must be written by Close, flagged final, even if full.
		if len(s.buf) == SegmentSize {
			if err := s.flush(false); err != nil {
				return n, err
			}
		}
		c := copy(s.buf[len(s.buf):SegmentSize], p)
		s.buf = s.buf[:len(s.buf)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

func (s *sealWriter) flush(final bool) error {
	tail := s.aad[len(s.aad)-aadTailSize:]
	binary.BigEndian.PutUint64(tail, s.idx)
	tail[8] = 0
	if final {
		tail[8] = 1
	}
	out := s.out[:nonceSize]
	if _, err := rand.Read(out); err != nil {
		s.err = fmt.Errorf("sealer: nonce: %w", err)
		return s.err
	}
	out = s.aead.Seal(out, out[:nonceSize], s.buf, s.aad)
	if _, err := s.w.Write(out); err != nil {
		s.err = err
		return err
	}
	s.idx++
	s.buf = s.buf[:0]
	return nil
}

// Close writes the final segment. Calling it again is a no-op.
func (s *sealWriter) Close() error {
	if s.err != nil {
		if errors.Is(s.err, errWriterClosed) {
			return nil
		}
		return s.err
	}
	if err := s.flush(true); err != nil {
		return err
	}
	s.err = errWriterClosed
	return nil
}

var errWriterClosed = errors.New("sealer: write after Close")

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// OpenReader returns a reader of the plaintext of a stream written by
// SealWriter under any key in the keyring. Each segment is authenticated
// before any of its bytes are returned, so a reader sees only genuine
// data; but a stream damaged in the middle yields the good segments before
// the error. Errors wrap ErrMalformed, ErrUnknownKey or ErrAuth; a stream
// cut short, at a segment boundary or not, is ErrAuth. The header is read
// lazily, on the first Read.
//
// On a nil keyring it returns r unchanged.
func (k *Keyring) OpenReader(r io.Reader) (io.Reader, error) {
	if k == nil {
		return r, nil
	}
	return &openReader{k: k, br: bufio.NewReaderSize(r, encSegSize+1)}, nil
}

type openReader struct {
	k     *Keyring
	br    *bufio.Reader
	aead  cipher.AEAD // nil until the header is read
	aad   []byte
	plain []byte
	off   int
	idx   uint64
	done  bool  // the final segment has been opened
	err   error // sticky
}

func (o *openReader) Read(p []byte) (int, error) {
	for o.off == len(o.plain) {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		if o.aead == nil {
			o.err = o.readHeader()
		} else {
			o.err = o.readSegment()
		}
	}
	n := copy(p, o.plain[o.off:])
	o.off += n
	return n, nil
}

func (o *openReader) readHeader() error {
	fixed := make([]byte, len(streamMagic)+2)
	if _, err := io.ReadFull(o.br, fixed); err != nil {
		return fmt.Errorf("%w: stream header: %v", ErrMalformed, err)
	}
	if !IsSealedStream(fixed) || fixed[len(fixed)-1] == 0 {
		return fmt.Errorf("%w: not a sealed stream", ErrMalformed)
	}
	rest := make([]byte, int(fixed[len(fixed)-1])+streamIDSize)
	if _, err := io.ReadFull(o.br, rest); err != nil {
		return fmt.Errorf("%w: stream header: %v", ErrMalformed, err)
	}
	id := string(rest[:len(rest)-streamIDSize])
	aead, ok := o.k.aeads[id]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKey, id)
	}
	o.aad = append(append(fixed, rest...), make([]byte, aadTailSize)...)
	o.plain = make([]byte, 0, SegmentSize)
	o.aead = aead
	return nil
}

func (o *openReader) readSegment() error {
	// Peek one byte past a full segment: whether it exists tells whether
	// this segment must be the final one.
	seg, err := o.br.Peek(encSegSize + 1)
	final := false
	switch {
	case err == nil:
		seg = seg[:encSegSize]
	case errors.Is(err, io.EOF):
		final = true
	default:
		return err
	}
	if len(seg) < nonceSize+tagSize {
		return fmt.Errorf("%w: stream truncated", ErrAuth)
	}
	plain, err := o.open(seg, final)
	if err != nil {
		// Tell the common "cut short at a segment boundary" case apart from
		// tampering: the last segment present opens as a non-final one.
		if final {
			if _, err2 := o.open(seg, false); err2 == nil {
				return fmt.Errorf("%w: stream truncated", ErrAuth)
			}
		}
		return fmt.Errorf("%w: segment %d", ErrAuth, o.idx)
	}
	if _, err := o.br.Discard(len(seg)); err != nil {
		return err
	}
	o.plain, o.off, o.done = plain, 0, final
	o.idx++
	return nil
}

func (o *openReader) open(seg []byte, final bool) ([]byte, error) {
	tail := o.aad[len(o.aad)-aadTailSize:]
	binary.BigEndian.PutUint64(tail, o.idx)
	tail[8] = 0
	if final {
		tail[8] = 1
	}
	return o.aead.Open(o.plain[:0], seg[:nonceSize], seg[nonceSize:], o.aad)
}
