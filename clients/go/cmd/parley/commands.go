package main

import (
	"context"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/parleychat/parley/clients/go/parley"
	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

func cmdAuth(ctx context.Context, e *env, args []string, register bool) error {
	fs, cf := newFlags(e, "login")
	user := fs.String("user", e.getenv("PARLEY_USER"), "user `name` (default $PARLEY_USER)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return fmt.Errorf("%w: --user is required", errUsage)
	}
	pw, err := e.password("Password for " + *user + ": ")
	if err != nil {
		return err
	}
	c, err := cf.anonymous(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var t parley.Tokens
	if register {
		t, err = c.Register(ctx, *user, pw)
	} else {
		t, err = c.Login(ctx, *user, pw)
	}
	if err != nil {
		return err
	}
	target := cf.target()
	tr, err := cf.transport()
	if err != nil {
		return err
	}
	if err := cf.store().login(target, t, tr); err != nil {
		return fmt.Errorf("storing tokens: %w", err)
	}
	fmt.Fprintf(e.stdout, "logged in as %s (%s) on %s\n", t.Username, roleName(t.Role), target)
	return nil
}

func cmdLogout(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "logout")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	target := cf.target()
	st := cf.store()
	t, ok, err := st.get(target)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("not logged in to %s", target)
	}
	c, err := cf.anonymous(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Logout(ctx, t.RefreshToken); err != nil {
		return err
	}
	if err := st.remove(target); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "logged out of %s\n", target)
	return nil
}

// conversationFlags adds --room and --to (or --user) and returns the
// conversation they name.
func conversationFlags(fs interface {
	String(name, value, usage string) *string
}, peerFlag string) func(required bool) (*chatv1.Conversation, error) {
	room := fs.String("room", "", "`room` name")
	peer := fs.String(peerFlag, "", "`user` of a direct conversation")
	return func(required bool) (*chatv1.Conversation, error) {
		switch {
		case *room != "" && *peer != "":
			return nil, fmt.Errorf("%w: give --room or --%s, not both", errUsage, peerFlag)
		case *room != "":
			return parley.Room(*room), nil
		case *peer != "":
			return parley.Direct(*peer), nil
		case required:
			return nil, fmt.Errorf("%w: --room or --%s is required", errUsage, peerFlag)
		}
		return nil, nil
	}
}

func cmdConversations(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "conversations")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	convs, err := listConversations(ctx, c)
	if err != nil {
		return err
	}
	for _, line := range formatConversations(convs) {
		fmt.Fprintln(e.stdout, line)
	}
	return nil
}

func cmdSend(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "send")
	conv := conversationFlags(fs, "to")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	to, err := conv(true)
	if err != nil {
		return err
	}
	text := strings.Join(pos, " ")
	if text == "" {
		return fmt.Errorf("%w: nothing to send", errUsage)
	}
	return withSession(ctx, cf, func(s *parley.Session) error {
		var ack *chatv1.Ack
		if room := to.GetRoom(); room != "" {
			ack, err = s.Send(ctx, room, text)
		} else {
			ack, err = s.SendPrivate(ctx, to.GetUser(), text)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "sent to %s as #%d\n", convName(to), ack.GetSeq())
		return nil
	})
}

// withSession runs f on a live session that nobody else reads: its events
// are discarded.
func withSession(ctx context.Context, cf *common, f func(*parley.Session) error) error {
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	go func() {
		for range s.Events() {
		}
	}()
	return f(s)
}

func cmdHistory(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "history")
	conv := conversationFlags(fs, "user")
	limit := fs.Int("limit", 50, "messages to show (at most 100)")
	before := fs.Int64("before", 0, "show messages before this `seq`")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	which, err := conv(true)
	if err != nil {
		return err
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	msgs, more, err := c.History(ctx, which, parley.HistoryOptions{BeforeSeq: *before, Limit: *limit})
	if err != nil {
		return err
	}
	if more && len(msgs) > 0 {
		fmt.Fprintf(e.stdout, "(older messages: --before %d)\n", msgs[0].GetSeq())
	}
	// Named from the reader's side, as in chat: for --user X that is @X,
	// whoever sent each message.
	label := convName(which)
	for _, m := range msgs {
		fmt.Fprintln(e.stdout, formatMessageIn(label, m))
	}
	return nil
}

func cmdUpload(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "upload")
	conv := conversationFlags(fs, "to")
	ctype := fs.String("type", "", "content `type` (default from the file name)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: upload takes one FILE", errUsage)
	}
	to, err := conv(false)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if *ctype == "" {
		*ctype = mime.TypeByExtension(filepath.Ext(pos[0]))
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ref, err := c.UploadFile(ctx, filepath.Base(pos[0]), *ctype, f, info.Size())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "uploaded %s (%s): %s\n", ref.GetName(), humanSize(ref.GetSize()), ref.GetId())
	if to == nil {
		return nil
	}
	s, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	go func() {
		for range s.Events() {
		}
	}()
	ack, err := s.SendFile(ctx, to, ref.GetId())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "posted to %s as #%d\n", convName(to), ack.GetSeq())
	return nil
}

func cmdDownload(ctx context.Context, e *env, args []string) (err error) {
	fs, cf := newFlags(e, "download")
	out := fs.String("o", "", "output `file` (- for stdout)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return fmt.Errorf("%w: download takes one file ID and -o FILE", errUsage)
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var w io.Writer = e.stdout
	if *out != "-" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(*out) // no partial files
			}
		}()
		w = f
	}
	ref, err := c.DownloadFile(ctx, pos[0], w)
	if err != nil {
		return err
	}
	if *out != "-" {
		fmt.Fprintf(e.stdout, "downloaded %s (%s) to %s\n", ref.GetName(), humanSize(ref.GetSize()), *out)
	}
	return nil
}

func cmdAdmin(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: admin needs a subcommand", errUsage)
	}
	sub, args := args[0], args[1:]
	fs, cf := newFlags(e, "admin "+sub)
	room := fs.String("room", "", "broadcast to this `room` only")
	reason := fs.String("reason", "", "reason shown to the user (kick)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"stats": 0, "kick": 1, "deactivate": 1, "activate": 1, "role": 2}
	if n, ok := want[sub]; ok && len(pos) != n {
		return fmt.Errorf("%w: admin %s takes %d argument(s)", errUsage, sub, n)
	} else if !ok && sub != "broadcast" {
		return fmt.Errorf("%w: unknown admin command %q", errUsage, sub)
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	switch sub {
	case "stats":
		st, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tCONNECTIONS\tONLINE\tROOMS\tIN/S\tOUT/S\tIN\tOUT\tUPTIME")
		for _, n := range append(st.GetNodes(), st.GetTotal()) {
			id := n.GetNodeId()
			if n == st.GetTotal() {
				id = "total"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%s\n", id, n.GetConnections(), n.GetOnlineUsers(), n.GetRooms(),
				n.GetMessagesInPerSecond(), n.GetMessagesOutPerSecond(), n.GetMessagesInTotal(), n.GetMessagesOutTotal(), n.GetUptime().AsDuration().Round(1e9))
		}
		return tw.Flush()
	case "broadcast":
		text := strings.Join(pos, " ")
		if text == "" {
			return fmt.Errorf("%w: nothing to broadcast", errUsage)
		}
		n, err := c.Broadcast(ctx, *room, text)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "broadcast to %d session(s)\n", n)
	case "kick":
		n, err := c.DisconnectUser(ctx, pos[0], *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "disconnected %d session(s) of %s\n", n, pos[0])
	case "deactivate", "activate":
		if err := c.SetUserActive(ctx, pos[0], sub == "activate"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%sd %s\n", sub, pos[0])
	case "role":
		role, ok := chatv1.Role_value["ROLE_"+strings.ToUpper(pos[1])]
		if !ok || role == 0 {
			return fmt.Errorf("%w: role is user, moderator or admin", errUsage)
		}
		if err := c.SetUserRole(ctx, pos[0], chatv1.Role(role)); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s is now %s\n", pos[0], strings.ToLower(pos[1]))
	}
	return nil
}
