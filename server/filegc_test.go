package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestRetentionDeletesFiles runs the janitor of a real server, on each
// store, as of later times: retention deletes messages, then the files no
// message references go (rows and blobs on disk), while a file a kept
// message references stays and downloads; posting a deleted file fails.
func TestRetentionDeletesFiles(t *testing.T) {
	t.Parallel()
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			t.Parallel()
			url := ""
			if db == "postgres" {
				url = testenv.PostgresSchema(t, "parley_test_")
			}
			srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
				c.DatabaseURL = url
				c.Retention = 72 * time.Hour
				c.FileGrace = 24 * time.Hour
				c.EncryptionKeys = "k1:" + testKey // sealed blobs
			}})
			testRetentionDeletesFiles(t, srv)
		})
	}
}

// testKey is a base64 32-byte key for at-rest encryption.
const testKey = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="

func testRetentionDeletesFiles(t *testing.T, srv *servertest.Server) {
	ctx := context.Background()
	conn := srv.Dial(t)
	aliceTok, bobTok := srv.Token(t, "alice", auth.RoleUser), srv.Token(t, "bob", auth.RoleUser)
	alice := connect(t, conn, "alice", aliceTok)
	blobs := map[string]string{} // upload id → blob id (the content's SHA-256)
	onDisk := func(id string) bool {
		_, err := os.Stat(filepath.Join(srv.DataDir, "files", blobs[id][:2], blobs[id]))
		return err == nil
	}
	upload := func(name string, content []byte) string {
		id := upload(t, conn, aliceTok, name, "text/plain", content).GetId()
		sum := sha256.Sum256(content)
		blobs[id] = hex.EncodeToString(sum[:])
		return id
	}
	postFile := func(id string) *chatv1.ServerEvent {
		return alice.next(replyTo(alice.send(&chatv1.ClientEvent{Event: &chatv1.ClientEvent_SendFile{SendFile: &chatv1.SendFile{Conversation: roomConv("general"), FileId: id}}})))
	}

	posted := []byte("posted in general")
	unposted := []byte("uploaded, never posted")
	postedID := upload("posted.txt", posted)
	unpostedID := upload("unposted.txt", unposted)
	if postFile(postedID).GetAck() == nil {
		t.Fatal("file message not acked")
	}
	now := time.Now()

	// Two days on: the message is within retention, so its file stays;
	// the upload nobody posted is past its grace and goes.
	if err := srv.RunJanitor(ctx, now.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := download(conn, bobTok, postedID); err != nil || !bytes.Equal(got, posted) {
		t.Fatalf("bob downloads the posted file: %q, %v", got, err)
	}
	if _, err := download(conn, aliceTok, unpostedID); status.Code(err) != codes.NotFound {
		t.Fatalf("download of the collected upload: %v, want NotFound", err)
	}
	if !onDisk(postedID) || onDisk(unpostedID) {
		t.Fatalf("on disk: posted %v (want true), unposted %v (want false)", onDisk(postedID), onDisk(unpostedID))
	}
	if ev := postFile(unpostedID); errorCode(ev) != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("posting the collected upload: %v, want NOT_FOUND", ev)
	}

	// Four days on: retention takes the message, then its file goes.
	if err := srv.RunJanitor(ctx, now.Add(100*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := download(conn, aliceTok, postedID); status.Code(err) != codes.NotFound {
		t.Fatalf("download after retention: %v, want NotFound", err)
	}
	if onDisk(postedID) {
		t.Fatal("the blob of a file no message references is still on disk")
	}

	// The same content uploaded again is stored afresh, as a new file.
	againID := upload("again.txt", posted)
	if againID == postedID || !onDisk(againID) {
		t.Fatalf("re-upload id %s (the deleted one was %s), on disk %v", againID, postedID, onDisk(againID))
	}
	if got, err := download(conn, aliceTok, againID); err != nil || !bytes.Equal(got, posted) {
		t.Fatalf("download of the re-upload: %q, %v", got, err)
	}
}
