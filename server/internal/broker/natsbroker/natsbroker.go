// Package natsbroker carries the hub's cluster events between parleyd
// nodes over NATS core publish/subscribe: every node publishes to one
// subject and subscribes to it. NATS keeps each publisher's messages in
// order, which is all the hub relies on. Nothing is persisted here:
// messages are stored in the shared database before they are published.
//
// A *Broker is safe for concurrent use.
package natsbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Config configures a Broker.
type Config struct {
	// URL of the NATS server(s), comma-separated; required.
	URL string
	// Subject all nodes share; default "parley.events". Clusters that share
	// a NATS server but not a database must use different subjects.
	Subject string
	// Name identifies this connection to the NATS server (for monitoring).
	Name   string
	Logger *slog.Logger
}

// Broker is one node's connection to the cluster's NATS subject.
type Broker struct {
	nc      *nats.Conn
	subject string
	sub     *nats.Subscription
	log     *slog.Logger
}

// New connects to NATS. It keeps reconnecting for as long as the node
// runs; events published while disconnected are buffered by the client up
// to its limit and then dropped (clients recover them with Resume).
func New(cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		return nil, errors.New("natsbroker: URL is required")
	}
	if cfg.Subject == "" {
		cfg.Subject = "parley.events"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect: %w", err)
	}
	return &Broker{nc: nc, subject: cfg.Subject, log: log}, nil
}

// Publish sends one event to every node (this one included).
func (b *Broker) Publish(data []byte) error { return b.nc.Publish(b.subject, data) }

// Subscribe calls handler for every event, one at a time, in each
// publisher's order. It returns once the subscription is registered with
// the server, so events published after it returns are seen.
func (b *Broker) Subscribe(handler func(data []byte)) error {
	sub, err := b.nc.Subscribe(b.subject, func(m *nats.Msg) { handler(m.Data) })
	if err != nil {
		return fmt.Errorf("natsbroker: subscribe: %w", err)
	}
	// A fan-out burst must not be dropped as a slow consumer by the client
	// library before the hub has queued it.
	if err := sub.SetPendingLimits(1<<20, 512<<20); err != nil {
		return err
	}
	b.sub = sub
	return b.nc.Flush()
}

// Close drains the subscription and closes the connection.
func (b *Broker) Close() error {
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
	err := b.nc.FlushTimeout(2 * time.Second)
	b.nc.Close()
	return err
}

// Connected reports whether the NATS connection is up now (false while it
// reconnects).
func (b *Broker) Connected() bool { return b.nc.IsConnected() }

// Reconnects counts the times the connection was re-established.
func (b *Broker) Reconnects() uint64 { return b.nc.Stats().Reconnects }

// Dropped counts the events NATS dropped because this node's subscription
// fell behind (its pending limits were reached).
func (b *Broker) Dropped() int64 {
	if b.sub == nil {
		return 0
	}
	n, err := b.sub.Dropped()
	if err != nil {
		return 0
	}
	return int64(n)
}
