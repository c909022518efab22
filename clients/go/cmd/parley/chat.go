package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

const chatHelp = `lines you type are sent to the current conversation; a line starting
with / is a command (start it with // to send a line beginning with /):
  /join ROOM       join a room and make it current
  /leave [ROOM]    leave a room (default the current one)
  /dm USER         make the direct conversation with USER current
  /msg USER TEXT   send one private message
  /conversations   list your rooms and direct conversations, last message first
  /rooms           list rooms
  /who             list who is online
  /quit            leave (so does end of input, Ctrl-D or Ctrl-C)`

// chatCommands lists the commands for the error a mistyped one gets.
var chatCommands = []string{"/join", "/leave", "/dm", "/msg", "/conversations", "/rooms", "/who", "/help", "/quit"}

// console is where interactive chat reads what is typed and prints what
// happens. Its methods are safe for concurrent use: events print while a
// line is being read.
type console interface {
	readLine() (string, error)
	println(lines ...string)
	setPrompt(prompt string)
}

// lineConsole reads plain lines (stdin is a pipe or a file) and prints to
// stdout; there is no prompt and nothing to redraw.
type lineConsole struct {
	sc *bufio.Scanner
	mu sync.Mutex
	w  io.Writer
}

func newLineConsole(r io.Reader, w io.Writer) *lineConsole {
	return &lineConsole{sc: bufio.NewScanner(r), w: w}
}

func (l *lineConsole) readLine() (string, error) {
	if l.sc.Scan() {
		return l.sc.Text(), nil
	}
	if err := l.sc.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

func (l *lineConsole) println(lines ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range lines {
		fmt.Fprintln(l.w, line)
	}
}

func (l *lineConsole) setPrompt(string) {}

// termConsole edits the line being typed with golang.org/x/term's Terminal
// (the package doc says why that one): an event printed while someone types
// clears the prompt and the partial line, prints, and draws them again
// below, so incoming messages never break into the input.
type termConsole struct {
	t *term.Terminal
}

func newTermConsole(rw io.ReadWriter) *termConsole {
	t := term.NewTerminal(rw, "> ")
	if s, ok := rw.(interface{ size() (int, int, error) }); ok {
		// A terminal that reports no size (some ptys) keeps the 80x24 default.
		if w, h, err := s.size(); err == nil && w > 0 && h > 0 {
			_ = t.SetSize(w, h)
		}
	}
	return &termConsole{t: t}
}

func (c *termConsole) readLine() (string, error) { return c.t.ReadLine() }

func (c *termConsole) println(lines ...string) {
	var b strings.Builder
	for _, line := range lines {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	_, _ = c.t.Write([]byte(b.String())) // one Write: one redraw of the prompt
}

func (c *termConsole) setPrompt(prompt string) { c.t.SetPrompt(prompt) }

// openConsole is the terminal when there is one (line editing), else plain
// lines on stdin and stdout. The function it returns restores the terminal.
func (e *env) openConsole() (console, func()) {
	if e.openTerminal != nil {
		rw, restore, err := e.openTerminal()
		if err == nil {
			return newTermConsole(rw), restore
		}
	}
	return newLineConsole(e.stdin, e.stdout), func() {}
}

// chatState is what the command loop keeps: who we are and where typed
// lines go. Only the command loop's goroutine touches it.
type chatState struct {
	me      string
	current *chatv1.Conversation
}

func (s *chatState) prompt() string { return convName(s.current) + "> " }

func cmdChat(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "chat")
	room := fs.String("room", "general", "`room` to talk in")
	to := fs.String("to", "", "talk with this `user` (a direct conversation) instead of a room")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	out, restore := e.openConsole()
	defer restore()
	r, err := c.ConnectResilient(ctx, parley.WithReconnectHook(func(err error, wait time.Duration) {
		out.println(fmt.Sprintf("%s ! disconnected (%v); reconnecting in %s", stamp(time.Now()), err, wait.Round(100*time.Millisecond)))
	}))
	if err != nil {
		return err
	}
	defer r.Close()
	st := &chatState{current: parley.Room("general")}
	if s := r.Current(); s != nil {
		st.me = s.Welcome().GetUser().GetUsername()
	}

	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for ev := range r.Events() {
			if lines := formatEvent(st.me, ev); len(lines) > 0 {
				out.println(lines...)
			}
		}
	}()

	switch {
	case *to != "":
		st.current = parley.Direct(*to)
	case *room != "general":
		if _, err := r.Join(ctx, *room); err != nil {
			return err
		}
		st.current = parley.Room(*room)
	}
	// What the stream alone would not show after a restart: the direct
	// conversations with people who are offline now.
	if convs, err := listConversations(ctx, c); err == nil {
		if dms := directPeers(convs); len(dms) > 0 {
			out.println(fmt.Sprintf("%s * direct conversations: %s (/dm USER to talk, /conversations for the last messages)", stamp(time.Now()), strings.Join(dms, ", ")))
		}
	} else {
		out.println(fmt.Sprintf("%s ! listing conversations: %s", stamp(time.Now()), errText(err)))
	}
	out.setPrompt(st.prompt())
	out.println(fmt.Sprintf("talking in %s; /help for commands", convName(st.current)))

	// Lines are read on their own goroutine so an interrupt or the end of
	// the session is noticed while waiting for input.
	lines := make(chan string)
	go func() {
		defer close(lines)
		for {
			line, err := out.readLine()
			if err != nil {
				return
			}
			select {
			case lines <- line:
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
		quit, err := chatCommand(ctx, c, r, out, st, line)
		if err != nil {
			out.println(fmt.Sprintf("%s ! %s", stamp(time.Now()), errText(err)))
		}
		if quit {
			return nil
		}
	}
}

// send posts text to the current conversation.
func (s *chatState) send(ctx context.Context, r *parley.ResilientSession, text string) error {
	if room := s.current.GetRoom(); room != "" {
		_, err := r.Send(ctx, room, text)
		return err
	}
	_, err := r.SendPrivate(ctx, s.current.GetUser(), text)
	return err
}

// chatCommand runs one input line; quit is true for /quit. Only a line
// starting with "/" is a command; "//" escapes a leading slash.
func chatCommand(ctx context.Context, c *parley.Client, r *parley.ResilientSession, out console, st *chatState, line string) (quit bool, err error) {
	if !strings.HasPrefix(line, "/") {
		return false, st.send(ctx, r, line)
	}
	if strings.HasPrefix(line, "//") {
		return false, st.send(ctx, r, line[1:])
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
		st.current = parley.Room(j.GetRoom())
		out.setPrompt(st.prompt())
		out.println(fmt.Sprintf("%s * joined #%s: %s", stamp(time.Now()), j.GetRoom(), strings.Join(j.GetMembers(), ", ")))
	case "/leave":
		if rest == "" {
			rest = st.current.GetRoom()
		}
		if rest == "" {
			return false, fmt.Errorf("usage: /leave ROOM (%s is not a room)", convName(st.current))
		}
		if err := r.Leave(ctx, rest); err != nil {
			return false, err
		}
		if st.current.GetRoom() == rest {
			st.current = parley.Room("general")
			out.setPrompt(st.prompt())
		}
		out.println(fmt.Sprintf("%s * left #%s; talking in %s", stamp(time.Now()), rest, convName(st.current)))
	case "/dm":
		if rest == "" || strings.Contains(rest, " ") {
			return false, fmt.Errorf("usage: /dm USER")
		}
		st.current = parley.Direct(strings.TrimPrefix(rest, "@"))
		out.setPrompt(st.prompt())
		lines := []string{fmt.Sprintf("%s * talking with %s", stamp(time.Now()), convName(st.current))}
		msgs, _, err := c.History(ctx, st.current, parley.HistoryOptions{Limit: 10})
		if err != nil {
			return false, err
		}
		for _, m := range msgs {
			lines = append(lines, formatMessage(st.me, m))
		}
		out.println(lines...)
	case "/msg":
		to, text, _ := strings.Cut(rest, " ")
		if to == "" || strings.TrimSpace(text) == "" {
			return false, fmt.Errorf("usage: /msg USER TEXT")
		}
		_, err := r.SendPrivate(ctx, to, strings.TrimSpace(text))
		return false, err
	case "/conversations", "/convs":
		convs, err := listConversations(ctx, c)
		if err != nil {
			return false, err
		}
		out.println(formatConversations(convs)...)
	case "/rooms":
		rooms, err := r.ListRooms(ctx)
		if err != nil {
			return false, err
		}
		out.println(formatRooms(rooms)...)
	case "/who":
		users, err := c.OnlineUsers(ctx)
		if err != nil {
			return false, err
		}
		out.println("online: " + usernames(users))
	default:
		return false, fmt.Errorf("unknown command %s; commands: %s (start a line with // to send it as text)", cmd, strings.Join(chatCommands, " "))
	}
	return false, nil
}

// maxConversationPages bounds one listing (200 per page): a server that
// keeps returning a page token cannot keep the client fetching.
const maxConversationPages = 50

// listConversations fetches every page of the caller's conversations.
func listConversations(ctx context.Context, c *parley.Client) ([]*chatv1.ConversationSummary, error) {
	var all []*chatv1.ConversationSummary
	token := ""
	for range maxConversationPages {
		page, err := c.Conversations(ctx, parley.ConversationsOptions{PageSize: 200, PageToken: token})
		if err != nil {
			return nil, err
		}
		all = append(all, page.Conversations...)
		if page.NextPageToken == "" || page.NextPageToken == token {
			break
		}
		token = page.NextPageToken
	}
	return all, nil
}

// directPeers names the direct conversations, most recent first.
func directPeers(convs []*chatv1.ConversationSummary) []string {
	var peers []string
	for _, s := range convs {
		if u := s.GetConversation().GetUser(); u != "" && !slices.Contains(peers, u) {
			peers = append(peers, u)
		}
	}
	return peers
}
