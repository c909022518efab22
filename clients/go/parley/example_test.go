package parley_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

func ExampleDial() {
	ctx := context.Background()
	// Log in with an unauthenticated client...
	anon, err := parley.Dial(ctx, "localhost:50051")
	if err != nil {
		log.Fatal(err)
	}
	defer anon.Close()
	tokens, err := anon.Login(ctx, "alice", os.Getenv("PARLEY_PASSWORD"))
	if err != nil {
		log.Fatal(err)
	}

	// ...then use a client that keeps the tokens fresh, saving each new
	// pair (refresh tokens are single-use).
	c, err := parley.Dial(ctx, "localhost:50051",
		parley.WithAutoRefresh(tokens, func(t parley.Tokens) { /* store t */ }),
		parley.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	rooms, err := c.Rooms(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rooms {
		fmt.Println(r.GetName(), r.GetMemberCount())
	}
}

func ExampleClient_Connect() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "localhost:50051", parley.WithToken(os.Getenv("PARLEY_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := c.Connect(ctx)
	if err != nil {
		log.Fatal(err) // e.g. Unauthenticated
	}
	defer s.Close()

	// Read events on their own goroutine: commands wait for answers that
	// queue behind unread events.
	go func() {
		for ev := range s.Events() {
			if m := ev.GetMessage(); m != nil {
				fmt.Printf("%s: %s\n", m.GetSender(), m.GetText())
			}
		}
		if err := s.Err(); err != nil {
			log.Println("session ended:", err)
		}
	}()
	if _, err := s.Join(ctx, "book-club"); err != nil {
		log.Fatal(err)
	}
}

func ExampleSession_Send() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "localhost:50051", parley.WithToken(os.Getenv("PARLEY_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := c.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	go func() {
		for range s.Events() {
		}
	}()

	ack, err := s.Send(ctx, "general", "hello, everyone")
	var perr *parley.Error
	switch {
	case errors.As(err, &perr) && perr.Code == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
		time.Sleep(perr.RetryAfter) // then try again
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("stored as", ack.GetSeq())
	}
}

func ExampleClient_ConnectResilient() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "localhost:50051", parley.WithToken(os.Getenv("PARLEY_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	r, err := c.ConnectResilient(ctx,
		parley.WithBackoff(time.Second, time.Minute),
		parley.WithReconnectHook(func(err error, wait time.Duration) {
			log.Printf("disconnected (%v); reconnecting in %s", err, wait)
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for ev := range r.Events() {
		if m := ev.GetMessage(); m != nil {
			fmt.Printf("#%d %s: %s\n", m.GetSeq(), m.GetSender(), m.GetText())
		}
	}
	log.Println("stopped:", r.Err())
}

func ExampleCodeOf() {
	err := &parley.Error{Code: chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "no such user"}
	fmt.Println(parley.CodeOf(fmt.Errorf("send: %w", err)))
	// Output: ERROR_CODE_NOT_FOUND
}

func ExampleClient_Conversations() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "localhost:50051", parley.WithToken(os.Getenv("PARLEY_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	opts := parley.ConversationsOptions{PageSize: 100}
	for {
		page, err := c.Conversations(ctx, opts)
		if err != nil {
			log.Fatal(err)
		}
		for _, cs := range page.Conversations {
			name := "#" + cs.GetConversation().GetRoom()
			if u := cs.GetConversation().GetUser(); u != "" {
				name = "@" + u
			}
			fmt.Println(name, cs.GetLastSeq(), cs.GetLastMessage().GetText())
		}
		if page.NextPageToken == "" {
			return
		}
		opts.PageToken = page.NextPageToken
	}
}

func ExampleClient_History_forward() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "localhost:50051", parley.WithToken(os.Getenv("PARLEY_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Read a room from its first message, oldest first, 100 at a time.
	opts := parley.HistoryOptions{Forward: true, Limit: 100}
	for {
		msgs, more, err := c.History(ctx, parley.Room("general"), opts)
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs {
			fmt.Println(m.GetSeq(), m.GetText())
		}
		if !more || len(msgs) == 0 {
			return
		}
		opts.AfterSeq = msgs[len(msgs)-1].GetSeq()
	}
}
