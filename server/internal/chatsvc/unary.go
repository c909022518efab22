package chatsvc

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/internal/filename"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server/internal/blob"
	"github.com/parleychat/parley/server/internal/hub"
	"github.com/parleychat/parley/server/internal/store"
)

// ChunkSize is the largest file chunk on the wire.
const ChunkSize = 64 << 10

// GetHistory pages through a conversation the caller may read: the latest
// page, backwards from before_seq, or forwards from after_seq when it is
// set (0 included: from the start).
func (s *Service) GetHistory(ctx context.Context, req *chatv1.GetHistoryRequest) (*chatv1.GetHistoryResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	// after_seq counts by presence: set to 0 it reads from the start.
	if req.GetBeforeSeq() > 0 && req.AfterSeq != nil {
		return nil, status.Error(codes.InvalidArgument, "set before_seq or after_seq, not both")
	}
	key, err := s.hub.ConversationKey(ctx, p.Username, req.GetConversation())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	msgs, more, err := s.cfg.Store.History(ctx, key, store.HistoryQuery{BeforeSeq: req.GetBeforeSeq(), AfterSeq: req.AfterSeq, Limit: int(req.GetLimit())})
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	out := &chatv1.GetHistoryResponse{HasMore: more, Messages: make([]*chatv1.Message, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = hub.MessageProto(m)
	}
	return out, nil
}

// onlineDefaultPageSize is ListOnlineUsers' page when page_size is 0.
const onlineDefaultPageSize = 100

// ListOnlineUsers lists one page of the users with a live session, sorted
// by username. The page token is the last username of the previous page.
// The validation interceptor has bounded page_size and page_token; 0 asks
// for the documented default.
func (s *Service) ListOnlineUsers(ctx context.Context, req *chatv1.ListOnlineUsersRequest) (*chatv1.ListOnlineUsersResponse, error) {
	size := int(req.GetPageSize())
	if size == 0 {
		size = onlineDefaultPageSize
	}
	users, next, count := s.hub.OnlinePage(req.GetPageToken(), size)
	return &chatv1.ListOnlineUsersResponse{Users: users, NextPageToken: next, OnlineCount: int32(count)}, nil
}

// ListRooms lists every room, the caller's and the others (all rooms are
// public), with stored and online member counts, sorted by name.
func (s *Service) ListRooms(ctx context.Context, _ *chatv1.ListRoomsRequest) (*chatv1.ListRoomsResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	rooms, err := s.hub.ListRooms(ctx, p.Username)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	return &chatv1.ListRoomsResponse{Rooms: rooms}, nil
}

// ListConversations lists one page of the rooms and direct conversations
// the caller is in, most recently active first. The validation
// interceptor has bounded page_size (0 means the store's default, 50) and
// page_token.
func (s *Service) ListConversations(ctx context.Context, req *chatv1.ListConversationsRequest) (*chatv1.ListConversationsResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	q := store.ConversationsQuery{Limit: int(req.GetPageSize())}
	if t := req.GetPageToken(); t != "" {
		pos, ok := decodeConversationToken(t)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "page_token: not a token this server issued; pass back a next_page_token unchanged")
		}
		q.After = &pos
	}
	page, more, err := s.cfg.Store.ListConversations(ctx, p.Username, hub.GeneralRoom, q)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	out := &chatv1.ListConversationsResponse{Conversations: make([]*chatv1.ConversationSummary, len(page))}
	for i, c := range page {
		cs := &chatv1.ConversationSummary{LastSeq: c.LastSeq}
		if c.Room {
			cs.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_Room{Room: c.Name}}
		} else {
			cs.Conversation = &chatv1.Conversation{Kind: &chatv1.Conversation_User{User: c.Name}}
		}
		if c.LastMessage != nil {
			cs.LastMessage = hub.MessageProto(*c.LastMessage)
		}
		out.Conversations[i] = cs
	}
	if more && len(page) > 0 {
		out.NextPageToken = encodeConversationToken(page[len(page)-1].Pos())
	}
	return out, nil
}

// conversationTokenPrefix versions the page token, so a later encoding can
// tell an old token from its own.
const conversationTokenPrefix = "c1."

// encodeConversationToken makes the opaque page token of a position: the
// last activity in Unix nanoseconds, the name and the key, NUL separated
// (neither names nor keys hold a NUL), base64url. Clients must not read
// it; it names nothing the caller could not list anyway.
func encodeConversationToken(p store.ConversationPos) string {
	var active int64
	if !p.Active.IsZero() {
		active = p.Active.UnixNano()
	}
	raw := strconv.FormatInt(active, 10) + "\x00" + p.Name + "\x00" + p.Key
	return conversationTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeConversationToken(t string) (store.ConversationPos, bool) {
	b64, ok := strings.CutPrefix(t, conversationTokenPrefix)
	if !ok {
		return store.ConversationPos{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return store.ConversationPos{}, false
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 {
		return store.ConversationPos{}, false
	}
	active, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || active < 0 {
		return store.ConversationPos{}, false
	}
	if _, _, _, ok := store.ParseKey(parts[2]); !ok {
		return store.ConversationPos{}, false
	}
	p := store.ConversationPos{Name: parts[1], Key: parts[2]}
	if active != 0 {
		p.Active = time.Unix(0, active).UTC()
	}
	return p, true
}

// UploadFile stores a file sent as FileInfo then chunks. The content is
// hashed while it streams to disk; nothing is kept if the upload fails.
// Every upload is a file of its own (a new id, with this upload's name,
// type and uploader); content that is already stored shares its blob.
func (s *Service) UploadFile(stream grpc.ClientStreamingServer[chatv1.UploadFileRequest, chatv1.UploadFileResponse]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err == io.EOF {
		return status.Error(codes.InvalidArgument, "the upload ended before its first message: send FileInfo, then the chunks")
	}
	if err != nil {
		return err
	}
	info := first.GetInfo()
	if info == nil {
		return status.Error(codes.InvalidArgument, "the first upload message must be info")
	}
	if info.GetSize() > s.cfg.MaxFileSize {
		return status.Errorf(codes.InvalidArgument, "file is %d bytes; the limit is %d", info.GetSize(), s.cfg.MaxFileSize)
	}
	pr, pw := io.Pipe()
	go func() {
		var n int64
		for {
			req, err := stream.Recv()
			if err == io.EOF {
				if n != info.GetSize() {
					pw.CloseWithError(status.Errorf(codes.InvalidArgument, "received %d bytes; info said %d", n, info.GetSize()))
					return
				}
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			chunk := req.GetChunk()
			if req.GetInfo() != nil {
				pw.CloseWithError(status.Error(codes.InvalidArgument, "info may only be sent first"))
				return
			}
			n += int64(len(chunk))
			if n > info.GetSize() {
				pw.CloseWithError(status.Errorf(codes.InvalidArgument, "more data than the %d bytes info declared", info.GetSize()))
				return
			}
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	staged, err := s.cfg.Blobs.Stage(ctx, pr)
	pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		if errors.Is(err, blob.ErrTooLarge) {
			return status.Errorf(codes.InvalidArgument, "file exceeds the %d byte limit", s.cfg.MaxFileSize)
		}
		if _, ok := status.FromError(err); ok {
			return err
		}
		return toStatus(s.log, err)
	}
	ctype := info.GetContentType()
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	// The row first, then the blob: the file garbage collector, which may
	// be deleting this same content right now, puts a blob back when it
	// finds a row naming it, and Commit writes the blob again if it was
	// taken.
	f, err := s.cfg.Store.PutFile(ctx, store.File{BlobID: staged.ID(), Name: filename.Display(info.GetName()), Size: staged.Size(), ContentType: ctype, Uploader: p.Username})
	if err != nil {
		staged.Discard()
		return toStatus(s.log, err)
	}
	if err := staged.Commit(); err != nil {
		return toStatus(s.log, err)
	}
	return stream.SendAndClose(&chatv1.UploadFileResponse{File: fileRef(f)})
}

// DownloadFile streams a file to its uploader or to a reader of a
// conversation it was posted in.
func (s *Service) DownloadFile(req *chatv1.DownloadFileRequest, stream grpc.ServerStreamingServer[chatv1.DownloadFileResponse]) error {
	ctx := stream.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	f, err := s.cfg.Store.GetFile(ctx, req.GetFileId())
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, "file not found")
	} else if err != nil {
		return toStatus(s.log, err)
	}
	ok, err := s.hub.CanReadFile(ctx, p.Username, f.ID)
	if err != nil {
		return toStatus(s.log, err)
	}
	if !ok {
		return status.Error(codes.PermissionDenied, "you may not read this file: it was not shared in a conversation you can read")
	}
	r, err := s.cfg.Blobs.Open(ctx, f.BlobID)
	if err != nil {
		return toStatus(s.log, fmt.Errorf("open blob %s of file %s: %w", f.BlobID, f.ID, err))
	}
	defer r.Close()
	if err := stream.Send(&chatv1.DownloadFileResponse{Data: &chatv1.DownloadFileResponse_Info{Info: fileRef(f)}}); err != nil {
		return err
	}
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&chatv1.DownloadFileResponse{Data: &chatv1.DownloadFileResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return toStatus(s.log, fmt.Errorf("read blob %s of file %s: %w", f.BlobID, f.ID, err))
		}
	}
}

func fileRef(f store.File) *chatv1.FileRef {
	return &chatv1.FileRef{Id: f.ID, Name: f.Name, Size: f.Size, ContentType: f.ContentType}
}
