package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/clients/go/parley"
)

const chatHelp = `lines you type are sent to the current room; commands:
  /join ROOM       join a room and make it current
  /leave ROOM      leave a room
  /msg USER TEXT   send a private message
  /rooms           list rooms
  /who             list who is online
  /quit            leave (so does end of input)`

// lockedWriter keeps lines from the event printer and the command loop
// whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) println(lines ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range lines {
		fmt.Fprintln(l.w, line)
	}
}

func cmdChat(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "chat")
	room := fs.String("room", "general", "`room` to talk in")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	out := &lockedWriter{w: e.stdout}
	r, err := c.ConnectResilient(ctx, parley.WithReconnectHook(func(err error, wait time.Duration) {
		out.println(fmt.Sprintf("%s ! disconnected (%v); reconnecting in %s", stamp(time.Now()), err, wait.Round(100*time.Millisecond)))
	}))
	if err != nil {
		return err
	}
	defer r.Close()
	me := ""
	if s := r.Current(); s != nil {
		me = s.Welcome().GetUser().GetUsername()
	}

	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for ev := range r.Events() {
			if lines := formatEvent(me, ev); len(lines) > 0 {
				out.println(lines...)
			}
		}
	}()

	current := "general"
	if *room != "general" {
		if _, err := r.Join(ctx, *room); err != nil {
			return err
		}
		current = *room
	}
	out.println(fmt.Sprintf("talking in #%s; /help for commands", current))

	// Lines are read on their own goroutine so an interrupt or the end of
	// the session is noticed while waiting for input.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(e.stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-r.Done():
				return
			}
		}
	}()

	for {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-r.Done():
			<-printed
			return r.Err()
		case <-ctx.Done():
			return nil
		}
		if !ok {
			return nil // end of input
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		quit, err := chatCommand(ctx, c, r, out, &current, line)
		if err != nil {
			out.println(fmt.Sprintf("%s ! %s", stamp(time.Now()), errText(err)))
		}
		if quit {
			return nil
		}
	}
}

// chatCommand runs one input line; quit is true for /quit.
func chatCommand(ctx context.Context, c *parley.Client, r *parley.ResilientSession, out *lockedWriter, current *string, line string) (quit bool, err error) {
	if !strings.HasPrefix(line, "/") {
		_, err := r.Send(ctx, *current, line)
		return false, err
	}
	cmd, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch cmd {
	case "/quit", "/exit":
		return true, nil
	case "/help":
		out.println(chatHelp)
	case "/join":
		if rest == "" {
			return false, fmt.Errorf("usage: /join ROOM")
		}
		j, err := r.Join(ctx, rest)
		if err != nil {
			return false, err
		}
		*current = j.GetRoom()
		out.println(fmt.Sprintf("%s * joined #%s: %s", stamp(time.Now()), j.GetRoom(), strings.Join(j.GetMembers(), ", ")))
	case "/leave":
		if rest == "" {
			rest = *current
		}
		if err := r.Leave(ctx, rest); err != nil {
			return false, err
		}
		if *current == rest {
			*current = "general"
		}
		out.println(fmt.Sprintf("%s * left #%s; talking in #%s", stamp(time.Now()), rest, *current))
	case "/msg":
		to, text, _ := strings.Cut(rest, " ")
		if to == "" || strings.TrimSpace(text) == "" {
			return false, fmt.Errorf("usage: /msg USER TEXT")
		}
		_, err := r.SendPrivate(ctx, to, strings.TrimSpace(text))
		return false, err
	case "/rooms":
		rooms, err := r.ListRooms(ctx)
		if err != nil {
			return false, err
		}
		lines := []string{"rooms:"}
		for _, room := range rooms {
			mark := " "
			if room.GetJoined() {
				mark = "*"
			}
			lines = append(lines, fmt.Sprintf("  %s #%s (%d)", mark, room.GetName(), room.GetMemberCount()))
		}
		out.println(lines...)
	case "/who":
		users, err := c.OnlineUsers(ctx)
		if err != nil {
			return false, err
		}
		out.println("online: " + usernames(users))
	default:
		return false, fmt.Errorf("unknown command %s; /help lists them", cmd)
	}
	return false, nil
}
