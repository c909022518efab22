package bridge

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/internal/filename"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

const (
	// uploadChunk is the UploadFile chunk size, the contract's maximum.
	uploadChunk = 64 << 10
	// fileIOTimeout bounds each chunk read from or written to the client,
	// instead of a whole-request timeout that large files would hit.
	fileIOTimeout = 60 * time.Second
	// multipartSlack is what multipart framing may add to MaxUploadBytes.
	multipartSlack = 64 << 10
)

// getFile streams Chat.DownloadFile as GET /api/files/{id}.
func (b *Bridge) getFile(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := b.callContext(r, 0)
	defer cancel()
	stream, err := b.chat().DownloadFile(ctx, &chatv1.DownloadFileRequest{FileId: r.PathValue("id")})
	if err != nil {
		b.writeStatus(w, status.Convert(err), nil)
		return
	}
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Internal, "download ended before the file description")
		}
		b.writeStatus(w, status.Convert(err), stream.Trailer())
		return
	}
	info := first.GetInfo()
	if info == nil || info.GetSize() < 0 {
		b.log.Error("api: download did not start with a FileRef", "file", r.PathValue("id"))
		writeJSONError(w, http.StatusInternalServerError, "INTERNAL", "internal error")
		return
	}

	h := w.Header()
	h.Set("Content-Type", safeContentType(info.GetContentType()))
	h.Set("Content-Length", strconv.FormatInt(info.GetSize(), 10))
	h.Set("Content-Disposition", attachment(info.GetName()))
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "private, no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	rc := http.NewResponseController(w)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.log.Warn("api: download failed mid-stream", "file", info.GetId(), "err", err)
			panic(http.ErrAbortHandler) // the client sees a truncated body, not a short file
		}
		chunk := msg.GetChunk()
		if n+int64(len(chunk)) > info.GetSize() {
			b.log.Error("api: download longer than its FileRef size", "file", info.GetId())
			panic(http.ErrAbortHandler)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(fileIOTimeout))
		if _, err := w.Write(chunk); err != nil {
			return // the client went away; returning cancels the stream
		}
		n += int64(len(chunk))
	}
	if n != info.GetSize() {
		b.log.Error("api: download shorter than its FileRef size", "file", info.GetId())
		panic(http.ErrAbortHandler)
	}
}

// postFile streams POST /api/files into Chat.UploadFile in 64 KiB chunks.
//
// The body is either the raw file, with its name in X-File-Name
// (percent-encoded UTF-8) and its type in Content-Type, its size being the
// Content-Length (or X-File-Size); or multipart/form-data whose part
// "file" carries the file, preceded by a "size" field unless X-File-Size
// is set. The size is needed up front: FileInfo opens the upload.
func (b *Bridge) postFile(w http.ResponseWriter, r *http.Request) {
	var (
		body        io.Reader
		name, ctype string
		size        = int64(-1)
	)
	if v := r.Header.Get("X-File-Size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "X-File-Size: not a size")
			return
		}
		size = n
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "malformed multipart body")
			return
		}
		for body == nil {
			part, err := mr.NextPart()
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", `multipart body has no "file" part`)
				return
			}
			switch part.FormName() {
			case "size":
				v, _ := io.ReadAll(io.LimitReader(part, 32))
				n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				if err != nil || n < 0 {
					writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", `"size" field: not a size`)
					return
				}
				size = n
			case "file":
				name, ctype, body = part.FileName(), part.Header.Get("Content-Type"), part
			}
		}
		if size < 0 {
			writeJSONError(w, http.StatusLengthRequired, "INVALID_ARGUMENT", `multipart uploads need a "size" field before the "file" part, or X-File-Size`)
			return
		}
	} else {
		body, ctype = r.Body, r.Header.Get("Content-Type")
		if v := r.Header.Get("X-File-Name"); v != "" {
			n, err := url.PathUnescape(v)
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "X-File-Name: bad percent-encoding")
				return
			}
			name = n
		}
		if size < 0 {
			size = r.ContentLength
		}
		if size < 0 {
			writeJSONError(w, http.StatusLengthRequired, "INVALID_ARGUMENT", "Content-Length or X-File-Size is required")
			return
		}
	}
	// Every name that enters is reduced to a display name. The server does
	// it too; doing it here keeps a bridge in front of an older parleyd
	// safe. An empty name stays empty, for the contract's "name is
	// required" refusal.
	if name != "" {
		name = filename.Display(name)
	}
	if size > b.cfg.MaxUploadBytes {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "file larger than "+strconv.FormatInt(b.cfg.MaxUploadBytes, 10)+" bytes")
		return
	}

	ctx, cancel := b.callContext(r, 0)
	defer cancel() // an upload abandoned half-way is cancelled, so the server drops it
	stream, err := b.chat().UploadFile(ctx)
	if err != nil {
		b.writeStatus(w, status.Convert(err), nil)
		return
	}
	info := &chatv1.FileInfo{Name: name, ContentType: ctype, Size: size}
	sendErr := stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: info}})

	rc := http.NewResponseController(w)
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, uploadChunk)
	var sent int64
	for sendErr == nil {
		_ = rc.SetReadDeadline(time.Now().Add(fileIOTimeout))
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			if sent+int64(n) > size {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "body longer than the declared size")
				return
			}
			sendErr = stream.Send(&chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: buf[:n]}})
			sent += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			var tooBig *http.MaxBytesError
			if errors.As(rerr, &tooBig) {
				writeJSONError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "body too large")
			} else {
				writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "cannot read body")
			}
			return
		}
	}
	if sendErr == nil && sent != size {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "body shorter than the declared size")
		return
	}
	// After a failed Send (io.EOF) the server has ended the call: its
	// status comes with CloseAndRecv.
	resp, err := stream.CloseAndRecv()
	b.writeResult(w, resp, err, stream.Trailer())
}

// safeContentType returns ct if it parses as a media type, else
// application/octet-stream. Downloads are attachments served with nosniff
// and a sandbox CSP, so even text/html cannot run in the app's origin.
func safeContentType(ct string) string {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return "application/octet-stream"
	}
	if out := mime.FormatMediaType(mt, params); out != "" {
		return out
	}
	return "application/octet-stream"
}

// attachment is a Content-Disposition for name, with an ASCII fallback
// and the RFC 6266/5987 UTF-8 form. The name is reduced to a display name
// again (filename.Display) for files stored before uploads were; in the
// fallback, quotes, backslashes and percent signs (which some browsers
// decode) become underscores too.
func attachment(name string) string {
	name = filename.Display(name)
	var ascii strings.Builder
	for _, r := range name {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' || r == '%' {
			ascii.WriteByte('_')
		} else {
			ascii.WriteRune(r)
		}
	}
	var ext strings.Builder
	for _, c := range []byte(name) {
		if isAttrChar(c) {
			ext.WriteByte(c)
		} else {
			ext.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)|0x100, 16)[1:]))
		}
	}
	return `attachment; filename="` + ascii.String() + `"; filename*=UTF-8''` + ext.String()
}

// isAttrChar is RFC 5987's attr-char.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
