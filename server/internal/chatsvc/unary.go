package chatsvc

import (
	"context"
	"errors"
	"fmt"
	"io"

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

// GetHistory pages through a conversation the caller may read.
func (s *Service) GetHistory(ctx context.Context, req *chatv1.GetHistoryRequest) (*chatv1.GetHistoryResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetBeforeSeq() > 0 && req.GetAfterSeq() > 0 {
		return nil, status.Error(codes.InvalidArgument, "set before_seq or after_seq, not both")
	}
	key, err := s.hub.ConversationKey(ctx, p.Username, req.GetConversation())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	msgs, more, err := s.cfg.Store.History(ctx, key, store.HistoryQuery{BeforeSeq: req.GetBeforeSeq(), AfterSeq: req.GetAfterSeq(), Limit: int(req.GetLimit())})
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

// ListRooms lists live rooms.
func (s *Service) ListRooms(ctx context.Context, _ *chatv1.ListRoomsRequest) (*chatv1.ListRoomsResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	return &chatv1.ListRoomsResponse{Rooms: s.hub.Rooms(p.Username)}, nil
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
