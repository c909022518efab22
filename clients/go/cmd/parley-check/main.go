// Command parley-check checks Parley's delivery guarantees end to end, for
// fault scripts (scripts/faults) and CI: N publishers and M subscribers in
// fresh rooms (and direct messages) on a running parleyd, reconnecting and
// resuming through whatever happens to the server meanwhile. It is a thin
// command over package check (clients/go/check), which records every
// acknowledgement and every delivery (live, and what restores and Resume
// replay), then reads history and reports:
//
//   - acked_lost: acknowledged messages missing from history or never
//     delivered to a subscriber who was a member;
//   - duplicated: a message delivered twice to one subscriber;
//   - reordered: a conversation's seq not increasing on one connection;
//   - live_gaps: a live delivery that skipped seqs the SDK then did not
//     fill on that connection;
//   - history_gaps: seqs missing from a conversation's history;
//   - stored_duplicates: one client_msg_id stored twice.
//
// It prints one JSON line on stdout (the summary, with per-node counts,
// "ok" true when all are 0) and a readable line on stderr (and one per
// node when --grpc-addr lists several), and exits 1 when any is not 0 (2
// when the run itself failed). It connects only where --grpc-addr says
// (meant for loopback) and ends by --deadline. Package check has the exact
// definitions.
//
// `parley-check proxy --listen ADDR --target ADDR` is a TCP forwarder the
// fault scripts put in front of PostgreSQL, to stall it (SIGSTOP the
// proxy) or cut it off (kill the proxy) without touching the database.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/clients/go/check"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		os.Exit(runProxy(os.Args[2:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg check.Config
	addrs := fs.String("grpc-addr", "127.0.0.1:50051", "parleyd's native gRPC address; comma-separated for the nodes of a cluster (members are spread over them and fail over to the next)")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "publishers (each its own user and session)")
	fs.IntVar(&cfg.Subscribers, "subscribers", 4, "subscribers (each its own user and session), members of every room")
	fs.IntVar(&cfg.Rooms, "rooms", 2, "fresh rooms to publish in")
	fs.BoolVar(&cfg.DMs, "dms", true, "publishers also send direct messages to subscribers")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish")
	fs.Float64Var(&cfg.Rate, "rate", 20, "messages per second per publisher")
	fs.DurationVar(&cfg.SendTimeout, "send-timeout", time.Minute, "how long one message is retried before it counts as unacknowledged")
	fs.BoolVar(&cfg.ServerOnly, "server-only", false, "turn the SDK's live gap repair off: count what the server's stream itself skips or reorders")
	fs.DurationVar(&cfg.Settle, "settle", 15*time.Second, "how long deliveries may take after publishing")
	fs.StringVar(&cfg.Run, "run", "", "name of this run's users and rooms (default random)")
	readyFile := fs.String("ready-file", "", "create this file once every publisher has an acknowledged message (a fault script waits for it)")
	deadline := fs.Duration("deadline", 5*time.Minute, "end the run after this long, whatever happens")
	verbose := fs.Bool("v", false, "log progress to stderr")
	debug := fs.Bool("debug", false, "log every retry to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.Addrs = append(cfg.Addrs, a)
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	if *debug {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *readyFile != "" {
		path := *readyFile
		cfg.Published = func() {
			if err := os.WriteFile(path, []byte("publishing\n"), 0o644); err != nil {
				cfg.Log.Error("ready file", "err", err)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *deadline)
	defer cancel()

	rep, err := check.Check(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "parley-check: %v\n", err)
		if rep == nil || errors.Is(err, context.DeadlineExceeded) {
			return 2
		}
	}
	line, _ := json.Marshal(struct {
		Check string `json:"check"`
		*check.Report
		Error string `json:"error,omitempty"`
	}{"parley-check", rep, errString(err)})
	fmt.Fprintf(stdout, "%s\n", line)
	fmt.Fprintf(stderr, "parley-check %s: acked %d (unacked %d, refused %d, retries %d, reconnects %d); lost %d, duplicated %d, reordered %d, live gaps %d, history gaps %d, stored duplicates %d; live %d, replayed %d (filled live %d), repaired by resume %d\n",
		rep.Run, rep.Acked, rep.Unacked, rep.Refused, rep.Retries, rep.Reconnects,
		rep.AckedLost, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps, rep.StoredDuplicates,
		rep.LiveDeliveries, rep.ReplayedDeliveries, rep.FilledLive, rep.RepairedByResume)
	if len(rep.Nodes) > 1 {
		for _, n := range rep.Nodes {
			fmt.Fprintf(stderr, "  node %s: members %d, sessions %d (reconnects %d, failed over %d), acked %d, live %d, replayed %d\n",
				n.Addr, n.Members, n.Sessions, n.Reconnects, n.FailedOver, n.Acked, n.LiveDeliveries, n.ReplayedDeliveries)
		}
	}
	switch {
	case err != nil:
		return 2
	case !rep.OK:
		return 1
	}
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
