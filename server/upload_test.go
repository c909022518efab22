package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// fileIDPattern is the contract's file_id pattern.
var fileIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestUploadsKeepTheirOwnMetadata uploads the same content twice, by two
// users under two names and types: each upload answers with its own id
// and metadata, each post shows the metadata of the upload its sender
// posted, each download is described by its own upload, only one blob is
// stored, and neither uploader may download the other's upload until it
// is shared with them.
func TestUploadsKeepTheirOwnMetadata(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{})
	conn := srv.Dial(t)
	aliceTok, bobTok, carolTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser), srv.Token(t, "carol", auth.RoleUser)
	alice, bob, carol := connect(t, conn, "alice", aliceTok), connect(t, conn, "bob", bobTok), connect(t, conn, "carol", carolTok)

	content := []byte("the same bytes, uploaded twice")
	a := upload(t, conn, aliceTok, "alice-notes.txt", "text/plain", content)
	b := upload(t, conn, bobTok, "bob-secret.bin", "application/x-bob", content)
	if a.GetId() == b.GetId() || !fileIDPattern.MatchString(a.GetId()) || !fileIDPattern.MatchString(b.GetId()) {
		t.Fatalf("upload ids %q and %q: want two different file ids", a.GetId(), b.GetId())
	}
	if b.GetName() != "bob-secret.bin" || b.GetContentType() != "application/x-bob" || b.GetSize() != int64(len(content)) {
		t.Fatalf("bob's upload came back as %v: it leaks or loses metadata", b)
	}
	if a.GetName() != "alice-notes.txt" || a.GetContentType() != "text/plain" {
		t.Fatalf("alice's upload = %v", a)
	}

	// Before anything is posted, each may download only their own.
	if _, err := download(conn, bobTok, a.GetId()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bob downloads alice's unposted upload: %v, want PermissionDenied", err)
	}
	if _, err := download(conn, aliceTok, b.GetId()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("alice downloads bob's unposted upload: %v, want PermissionDenied", err)
	}

	// Each posts their own upload to general; everyone sees each sender's
	// metadata.
	sendFile := func(c *client, id string) {
		t.Helper()
		ev := c.next(replyTo(c.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendFile{SendFile: &chatv1.SendFile{Conversation: roomConv("general"), FileId: id}}})))
		if ev.GetAck() == nil {
			t.Fatalf("%s: SendFile = %v", c.name, ev)
		}
	}
	fileFrom := func(sender string) func(*chatv1.ServerEvent) bool {
		return func(ev *chatv1.ServerEvent) bool {
			return ev.GetMessage().GetFile() != nil && ev.GetMessage().GetSender() == sender
		}
	}
	sendFile(bob, b.GetId())
	sendFile(alice, a.GetId())
	for _, c := range []*client{alice, bob, carol} {
		for sender, want := range map[string]*chatv1.FileRef{"alice": a, "bob": b} {
			got := c.next(fileFrom(sender)).GetMessage().GetFile()
			if got.GetId() != want.GetId() || got.GetName() != want.GetName() || got.GetContentType() != want.GetContentType() {
				t.Fatalf("%s sees %s's file as %v, want %v", c.name, sender, got, want)
			}
		}
	}
	hist, err := chatv1.NewChatClient(conn).GetHistory(servertest.WithToken(context.Background(), carolTok), &chatv1.GetHistoryRequest{Conversation: roomConv("general")})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, m := range hist.GetMessages() {
		names[m.GetSender()] = m.GetFile().GetName()
	}
	if names["alice"] != "alice-notes.txt" || names["bob"] != "bob-secret.bin" {
		t.Fatalf("history file names = %v", names)
	}

	// Downloads: each upload is described by its own metadata.
	for _, want := range []*chatv1.FileRef{a, b} {
		info, got := downloadWithInfo(t, carolTok, conn, want.GetId())
		if !bytes.Equal(got, content) || info.GetName() != want.GetName() || info.GetContentType() != want.GetContentType() || info.GetId() != want.GetId() {
			t.Fatalf("download of %s: %v, %q", want.GetId(), info, got)
		}
	}

	// Only the blob is shared: one file on disk, named by the content hash.
	sum := sha256.Sum256(content)
	var blobs []string
	filepath.WalkDir(filepath.Join(srv.DataDir, "files"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			blobs = append(blobs, d.Name())
		}
		return nil
	})
	if len(blobs) != 1 || blobs[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("blobs on disk = %v, want the one content hash", blobs)
	}
}

// downloadWithInfo downloads file id and returns its FileRef and content.
func downloadWithInfo(t *testing.T, token string, conn *grpc.ClientConn, id string) (*chatv1.FileRef, []byte) {
	t.Helper()
	stream, err := chatv1.NewChatClient(conn).DownloadFile(servertest.WithToken(context.Background(), token), &chatv1.DownloadFileRequest{FileId: id})
	if err != nil {
		t.Fatal(err)
	}
	var info *chatv1.FileRef
	var buf bytes.Buffer
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return info, buf.Bytes()
		}
		if err != nil {
			t.Fatalf("download %s: %v", id, err)
		}
		if resp.GetInfo() != nil {
			info = resp.GetInfo()
		}
		buf.Write(resp.GetChunk())
	}
}

// TestUploadShortStreams ends UploadFile streams early or malformed in
// each way: every one is InvalidArgument with a message, never Unknown.
func TestUploadShortStreams(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) { c.RateLimits = "upload=unlimited" }})
	conn := srv.Dial(t)
	tok := srv.Token(t, "alice", auth.RoleUser)
	info := func(size int64) *chatv1.UploadFileRequest {
		return &chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Info{Info: &chatv1.FileInfo{Name: "f.txt", Size: size}}}
	}
	chunk := func(s string) *chatv1.UploadFileRequest {
		return &chatv1.UploadFileRequest{Data: &chatv1.UploadFileRequest_Chunk{Chunk: []byte(s)}}
	}
	for _, tt := range []struct {
		name string
		msgs []*chatv1.UploadFileRequest
		want string // in the message
	}{
		{"nothing sent", nil, "ended before its first message"},
		{"info only", []*chatv1.UploadFileRequest{info(10)}, "received 0 bytes; info said 10"},
		{"short content", []*chatv1.UploadFileRequest{info(10), chunk("abc")}, "received 3 bytes; info said 10"},
		{"long content", []*chatv1.UploadFileRequest{info(2), chunk("abc")}, "more data than the 2 bytes"},
		{"chunk first", []*chatv1.UploadFileRequest{chunk("abc")}, "first upload message must be info"},
		{"info twice", []*chatv1.UploadFileRequest{info(3), info(3)}, "info may only be sent first"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream, err := chatv1.NewChatClient(conn).UploadFile(servertest.WithToken(context.Background(), tok))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.msgs {
				if err := stream.Send(m); err != nil {
					break // the server ended the call; CloseAndRecv has its status
				}
			}
			_, err = stream.CloseAndRecv()
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
				t.Fatalf("status = %v; want InvalidArgument with %q", err, tt.want)
			}
		})
	}
}
