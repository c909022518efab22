// Package natsbroker carries the hub's cluster events between parleyd
// nodes over NATS core publish/subscribe, on subjects the hub names by
// interest (a room, a user, the whole cluster). NATS does the routing:
// a node subscribes only to the subjects its own sessions need, so the
// server, not every node, filters the traffic, and subject interest is
// what NATS is built for (Centrifugo's NATS broker subscribes per channel
// the same way). Request/reply with several responders (Gather) answers
// the cluster-wide admin calls without a protocol of our own.
//
// Core NATS rather than JetStream: the database is the log. Every stored
// message is committed before it is published, so an event NATS loses is
// re-read from the store by the hub (gap fill, and a catch-up after a
// disconnect, which this package reports through Receiver.Resumed). A
// stream would store every message a second time, on the write path.
//
// Queue groups are not used: every node with an interest needs every
// event, not one of them. Presence is not kept in a JetStream KV bucket:
// a dead node's keys would outlive it until a per-key TTL (nats-server
// 2.11; this machine runs 2.9), while heartbeats on a subject let the
// others drop it within seconds, and a node that missed a change asks
// the one that made it (Gather), which NATS request/reply does for free.
//
// Ordering: all subscriptions deliver into one channel read by one
// goroutine, so the receiver sees the events in the order this connection
// got them; NATS keeps each publisher's order.
//
// A *Broker is safe for concurrent use.
package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Config configures a Broker.
type Config struct {
	// URL of the NATS server(s), comma-separated; required.
	URL string
	// Subject is the prefix of every subject the cluster uses; default
	// "parley". Clusters that share a NATS server but not a database must
	// use different prefixes.
	Subject string
	// Name identifies this connection to the NATS server (for monitoring).
	Name   string
	Logger *slog.Logger
	// Pending bounds the events received and not yet handled; default
	// 65536. When it is full NATS drops events and the receiver is told
	// to catch up (Resumed).
	Pending int
}

// Broker is one node's connection to the cluster's NATS subjects.
type Broker struct {
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	in     chan *nats.Msg

	mu      sync.Mutex
	subs    map[string]*nats.Subscription
	recv    func(subject, reply string, data []byte)
	resumed func(lost time.Time)
	stop    chan struct{}
	done    chan struct{}

	lostAt  atomic.Int64 // unix nanos of the last disconnect not yet resumed
	dropped atomic.Int64
}

// New connects to NATS. It keeps reconnecting for as long as the node
// runs; events published while disconnected are buffered by the client up
// to its limit and then dropped (the other nodes catch up from the store).
func New(cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		return nil, errors.New("natsbroker: URL is required")
	}
	if cfg.Subject == "" {
		cfg.Subject = "parley"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Pending <= 0 {
		cfg.Pending = 1 << 16
	}
	b := &Broker{prefix: cfg.Subject, log: cfg.Logger, in: make(chan *nats.Msg, cfg.Pending), subs: map[string]*nats.Subscription{}, stop: make(chan struct{}), done: make(chan struct{})}
	log := cfg.Logger
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		// A node never needs its own events back; without this NATS echoes
		// every publish to the subjects it also listens on (its rooms).
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
			b.markLost()
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			b.resume()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				// The pending queue overflowed and NATS dropped events.
				b.dropped.Add(1)
				b.markLost()
				go b.resume()
				return
			}
			log.Warn("nats", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect: %w", err)
	}
	b.nc = nc
	return b, nil
}

func (b *Broker) markLost() { b.lostAt.CompareAndSwap(0, time.Now().UnixNano()) }

func (b *Broker) resume() {
	at := b.lostAt.Swap(0)
	b.mu.Lock()
	r := b.resumed
	b.mu.Unlock()
	if at == 0 || r == nil {
		return
	}
	r(time.Unix(0, at))
}

// Prefix is the first token of every subject, for the receiver's names.
func (b *Broker) Prefix() string { return b.prefix }

// Start hands every event of every subscription to receive, on one
// goroutine in arrival order (it must not block on I/O). resumed says
// events may have been lost since lost (a disconnect, or a full pending
// queue); it runs on a goroutine of its own once the subscriptions are
// back.
func (b *Broker) Start(receive func(subject, reply string, data []byte), resumed func(lost time.Time)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.recv != nil {
		return errors.New("natsbroker: started twice")
	}
	b.recv, b.resumed = receive, resumed
	go func() {
		defer close(b.done)
		for {
			select {
			case m := <-b.in:
				receive(m.Subject, m.Reply, m.Data)
			case <-b.stop:
				return
			}
		}
	}()
	return nil
}

// Publish sends data on subject, with reply as its reply subject when not
// empty. It only buffers: the client's own goroutine writes the socket.
func (b *Broker) Publish(subject, reply string, data []byte) error {
	if reply == "" {
		return b.nc.Publish(subject, data)
	}
	return b.nc.PublishRequest(subject, reply, data)
}

// Subscribe starts the subjects' events and returns once the server has
// them, so that anything published after it returns is received.
func (b *Broker) Subscribe(subjects ...string) error {
	b.mu.Lock()
	added := false
	for _, s := range subjects {
		if b.subs[s] != nil {
			continue
		}
		sub, err := b.nc.ChanSubscribe(s, b.in)
		if err != nil {
			b.mu.Unlock()
			return fmt.Errorf("natsbroker: subscribe %s: %w", s, err)
		}
		b.subs[s] = sub
		added = true
	}
	b.mu.Unlock()
	if !added {
		return nil
	}
	return b.nc.FlushTimeout(5 * time.Second)
}

// Unsubscribe stops the subjects' events.
func (b *Broker) Unsubscribe(subjects ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range subjects {
		if sub := b.subs[s]; sub != nil {
			delete(b.subs, s)
			errs = append(errs, sub.Unsubscribe())
		}
	}
	return errors.Join(errs...)
}

// Gather publishes data on subject and collects replies until want have
// come or ctx ends; it returns what came.
func (b *Broker) Gather(ctx context.Context, subject string, data []byte, want int) ([][]byte, error) {
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(subject, inbox, data); err != nil {
		return nil, err
	}
	var out [][]byte
	for len(out) < want {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return out, nil
			}
			return out, err
		}
		out = append(out, m.Data)
	}
	return out, nil
}

// Close stops delivery and closes the connection, flushing what was
// published.
func (b *Broker) Close() error {
	b.mu.Lock()
	started := b.recv != nil
	b.mu.Unlock()
	err := b.nc.FlushTimeout(2 * time.Second)
	b.nc.Close()
	close(b.stop)
	if started {
		<-b.done
	}
	return err
}

// Connected reports whether the NATS connection is up now (false while it
// reconnects).
func (b *Broker) Connected() bool { return b.nc.IsConnected() }

// Reconnects counts the times the connection was re-established.
func (b *Broker) Reconnects() uint64 { return b.nc.Stats().Reconnects }

// Dropped counts the times NATS dropped events because this node fell
// behind (its pending queue was full).
func (b *Broker) Dropped() int64 { return b.dropped.Load() }

// Subscriptions counts the subjects this node listens on now.
func (b *Broker) Subscriptions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Received counts the events this node has received.
func (b *Broker) Received() (msgs, bytes uint64) {
	s := b.nc.Stats()
	return s.InMsgs, s.InBytes
}
