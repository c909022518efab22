package hub

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// TestEncodeInvalidUTF8 is a wire-reachable case: a server-made string
// quoting a client's bytes must not panic the encoder; its bad bytes become
// U+FFFD and the rest of the event survives, nested fields included.
func TestEncodeInvalidUTF8(t *testing.T) {
	bad := "bad \xff\xfe bytes"
	ev := &chatv1.ServerEvent{
		RequestId: "r\xc3",
		Event: &chatv1.ServerEvent_Error{Error: &chatv1.Error{
			Code: chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: bad,
		}},
	}
	f := Encode(ev)
	var got chatv1.ServerEvent
	if err := proto.Unmarshal(f.Data, &got); err != nil {
		t.Fatalf("frame does not decode: %v", err)
	}
	if m := got.GetError().GetMessage(); m != "bad \uFFFD bytes" {
		t.Errorf("message = %q", m)
	}
	if got.GetRequestId() != "r\uFFFD" || got.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("event = %v", &got)
	}
	if ev.GetError().GetMessage() != bad {
		t.Error("Encode changed the caller's event")
	}

	list := &chatv1.ServerEvent{Event: &chatv1.ServerEvent_RoomJoined{RoomJoined: &chatv1.RoomJoined{
		Room: "lobby", Members: []string{"alice", "b\x80b"},
	}}}
	if err := proto.Unmarshal(Encode(list).Data, &got); err != nil {
		t.Fatal(err)
	}
	if ms := got.GetRoomJoined().GetMembers(); len(ms) != 2 || !strings.Contains(ms[1], "\uFFFD") {
		t.Errorf("members = %q", ms)
	}
}
