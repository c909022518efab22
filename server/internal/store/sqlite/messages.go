package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/groupcommit"
	"github.com/parleychat/parley/server/internal/store/storefault"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

type appendReq struct {
	groupcommit.Slot[appendResult]
	msg    store.Message
	sealed []byte // sealed Text, nil when no key is configured
	// overlapped: queued while a commit ran, so its caller is not the only
	// one appending (a caller waits for its append before the next).
	overlapped bool
}

type appendResult struct {
	msg store.Message
	dup bool
	err error
}

// AppendMessage stores m and returns it as stored, with ID (when empty: a
// new id that sorts by time), SentAt (when zero: now, UTC) and Seq (the
// conversation's next number, from 1, assigned in the same transaction as
// the insert) filled in; m.Seq is ignored.
//
// If m.ClientMsgID is set and the sender already has a message with that
// id, nothing is written and the original is returned with duplicate set.
// This holds within one group-commit batch too.
//
// AppendMessage returns only after the transaction holding m committed
// (see the package doc for what that guarantees). If ctx ends while m is
// still queued it returns ctx.Err() and m is not stored; once the writer
// has taken m it runs to completion and the real outcome is returned.
// A caller-chosen ID that is taken gives store.ErrExists.
func (s *Store) AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	if err := s.check(ctx); err != nil {
		return store.Message{}, false, err
	}
	m, sealed, err := storeutil.PrepareAppend(m, s.sealer)
	if err != nil {
		return store.Message{}, false, fmt.Errorf("sqlite: %w", err)
	}
	req := &appendReq{msg: m, sealed: sealed}
	req.overlapped = s.inCommit.Load()
	r, err := s.q.Do(ctx, req)
	if err != nil {
		return store.Message{}, false, err
	}
	return r.msg, r.dup, r.err
}

// writeLoop is the single writer of messages. It runs until Close and the
// queue is empty.
func (s *Store) writeLoop() {
	defer close(s.done)
	batch := make([]*appendReq, 0, s.maxBatch)
	for {
		var waited bool
		batch, waited = s.q.Take(batch[:0])
		if len(batch) == 0 {
			return
		}
		if s.delay > 0 && !waited && len(batch) < delayBelow && anyOverlapped(batch) {
			// An append came while the last commit ran, so several callers
			// are appending at once: let a few more share this commit (and
			// its fsync). A lone caller, however fast, is never held: its
			// next append comes after its answer, and so after the commit.
			// Nor is a batch already shared by delayBelow: waiting would
			// then cost throughput and save little.
			time.Sleep(s.delay)
			batch = s.q.TakeMore(batch)
		}
		s.inCommit.Store(true)
		s.commitBatch(batch)
		clear(batch) // drop references so answered requests can be collected
	}
}

const (
	msgCols = `id, conversation, seq, sender, recipient, coalesce(client_msg_id, ''), text, text_sealed,
		coalesce(file_id, ''), file_name, file_size, file_type, sent_at`

	qDedup = `SELECT ` + msgCols + ` FROM messages WHERE sender = ? AND client_msg_id = ?`

	// The seq comes from the conversation's counter read in this same
	// write transaction; the insert goes first so that a failed insert
	// (a taken caller-chosen id) leaves the counter untouched.
	qInsertMsg = `INSERT INTO messages (id, conversation, seq, sender, recipient, client_msg_id, text, text_sealed,
			file_id, file_name, file_size, file_type, sent_at)
		VALUES (?1, ?2, coalesce((SELECT last_seq FROM conversations WHERE key = ?2), 0) + 1,
			?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
		RETURNING seq`
	qBumpSeq = `INSERT INTO conversations (key, last_seq) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET last_seq = excluded.last_seq`
)

// commitBatch writes batch in one transaction and answers every request
// after the commit. A request that fails on its own (a taken id) fails
// alone; any other error fails the whole batch, since the transaction is
// then rolled back.
func (s *Store) commitBatch(batch []*appendReq) {
	// Not any caller's context: a taken request must complete, within the
	// write deadline (SQLite interrupts the statement when it passes).
	ctx, commit := s.q.StartCommit(batch)
	ctx, cancel := context.WithTimeout(ctx, s.writeTO)
	defer cancel()
	results := make([]appendResult, len(batch))
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		// Bind the prepared statements to this transaction's connection
		// (the one writer connection, where they are already prepared).
		st := batchStmts{
			dedup:  tx.StmtContext(ctx, s.wst.dedup),
			insert: tx.StmtContext(ctx, s.wst.insert),
			bump:   tx.StmtContext(ctx, s.wst.bump),
		}
		seen := make(map[string]int) // sender\x00client_msg_id -> index in batch
		for i, r := range batch {
			res, err := s.appendOne(ctx, st, i, r, seen, results)
			if err != nil {
				return err
			}
			results[i] = res
		}
		return nil
	})
	commit.End(err)
	if err != nil {
		if !storefault.Unavailable(err) { // the server's fault log counts those
			s.log.Error("append batch failed", "messages", len(batch), "err", err)
		}
		for i := range results {
			results[i] = appendResult{err: err}
		}
	} else {
		s.batches.Add(1)
		s.appended.Add(int64(len(batch)))
	}
	s.inCommit.Store(false) // before the answers: see appendReq.overlapped
	for i, r := range batch {
		r.Answer(results[i])
	}
}

// delayBelow is the batch size from which the writer commits without the
// commit delay.
const delayBelow = 8

func anyOverlapped(batch []*appendReq) bool {
	for _, r := range batch {
		if r.overlapped {
			return true
		}
	}
	return false
}

// appendOne writes one request inside the batch transaction. A non-nil
// error aborts the batch; a per-request failure is in the result.
type batchStmts struct{ dedup, insert, bump *sql.Stmt }

func (s *Store) appendOne(ctx context.Context, st batchStmts, i int, r *appendReq, seen map[string]int, results []appendResult) (appendResult, error) {
	m := r.msg
	var key string
	if m.ClientMsgID != "" {
		key = m.Sender + "\x00" + m.ClientMsgID
		if j, ok := seen[key]; ok {
			return appendResult{msg: results[j].msg, dup: true}, nil
		}
	}
	now := time.Now().UTC()
	if m.ID == "" {
		m.ID = s.ids.Next(now)
	}
	if m.SentAt.IsZero() {
		m.SentAt = now
	}
	text := m.Text
	if r.sealed != nil {
		text = ""
	}
	err := st.insert.QueryRowContext(ctx, m.ID, m.Conversation, m.Sender, m.Recipient,
		nullIfEmpty(m.ClientMsgID), text, r.sealed, nullIfEmpty(m.FileID), m.FileName, m.FileSize, m.FileType,
		nanos(m.SentAt)).Scan(&m.Seq)
	if err != nil {
		if mapped := s.mapErr(err); errors.Is(mapped, store.ErrExists) {
			// SQLite undid just the failed statement; the batch goes on. A
			// retry hits the unique (sender, client_msg_id) index: looking
			// it up only then saves a query on every first send.
			if key != "" {
				orig, sealed, err := storeutil.ScanMessage(st.dedup.QueryRowContext(ctx, m.Sender, m.ClientMsgID))
				switch {
				case err == nil:
					orig.Text, err = s.openText(orig.Text, sealed)
					return appendResult{msg: orig, dup: true, err: err}, nil
				case !errors.Is(err, sql.ErrNoRows):
					return appendResult{}, err
				}
			}
			return appendResult{err: mapped}, nil
		}
		return appendResult{}, err
	}
	if _, err := st.bump.ExecContext(ctx, m.Conversation, m.Seq); err != nil {
		return appendResult{}, err
	}
	if key != "" {
		seen[key] = i
	}
	return appendResult{msg: m}, nil
}

type scanner interface{ Scan(dest ...any) error }

// openText returns a message's text from its two columns.
func (s *Store) openText(text string, sealed []byte) (string, error) {
	t, err := storeutil.OpenText(s.sealer, text, sealed)
	if err != nil {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	return t, nil
}

func (s *Store) queryMessages(ctx context.Context, q *sql.Stmt, args ...any) ([]store.Message, error) {
	rows, err := q.QueryContext(ctx, args...)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var msgs []store.Message
	for rows.Next() {
		m, sealed, err := storeutil.ScanMessage(rows)
		if err != nil {
			return nil, s.mapErr(err)
		}
		if m.Text, err = s.openText(m.Text, sealed); err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.mapErr(err)
	}
	return msgs, nil
}

// History limits.
const (
	DefaultHistoryLimit = storeutil.DefaultHistoryLimit
	MaxHistoryLimit     = storeutil.MaxHistoryLimit
)

const (
	qHistoryBackward = `SELECT ` + msgCols + ` FROM messages
		WHERE conversation = ? AND seq < ? ORDER BY seq DESC LIMIT ?`
	qHistoryForward = `SELECT ` + msgCols + ` FROM messages
		WHERE conversation = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?`
)

// History returns a page of a conversation, oldest first, and whether more
// messages lie beyond the page in the direction of travel:
//   - neither bound: the latest Limit messages; hasMore means older exist.
//   - BeforeSeq: the Limit messages just before it; hasMore means older exist.
//   - AfterSeq (set, 0 included): the Limit messages just after it, so
//     from the start for 0; hasMore means newer exist.
//   - both: the first Limit messages strictly between them; hasMore means
//     more lie in that window.
//
// Limit is clamped to 1..MaxHistoryLimit; 0 means DefaultHistoryLimit.
// Seq numbers of deleted (expired) messages are simply absent.
func (s *Store) History(ctx context.Context, conversation string, q store.HistoryQuery) ([]store.Message, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	return storeutil.History(q, func(forward bool, after, before int64, n int) ([]store.Message, error) {
		if forward {
			return s.queryMessages(ctx, s.rst.histFwd, conversation, after, before, n)
		}
		return s.queryMessages(ctx, s.rst.histBack, conversation, before, n)
	})
}

const qLastSeq = `SELECT last_seq FROM conversations WHERE key = ?`

// LastSeq returns the highest seq ever assigned in conversation, 0 if none.
// Retention does not lower it.
func (s *Store) LastSeq(ctx context.Context, conversation string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var seq int64
	err := s.rst.lastSeq.QueryRowContext(ctx, conversation).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, s.mapErr(err)
}

// MaxDirectLimit caps DirectMessagesSince.
const MaxDirectLimit = storeutil.MaxDirectLimit

// The redundant test for a non-empty recipient lets SQLite use the partial
// index messages_direct.
const qDirectSince = `SELECT ` + msgCols + ` FROM messages
	WHERE recipient = ? AND recipient <> '' AND sent_at > ? ORDER BY sent_at, rowid LIMIT ?`

// DirectMessagesSince returns direct messages to username sent strictly
// after since, oldest first, at most limit of them (limit <= 0 or above
// MaxDirectLimit means MaxDirectLimit), and whether more follow. A zero
// since means from the start.
func (s *Store) DirectMessagesSince(ctx context.Context, username string, since time.Time, limit int) ([]store.Message, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	if username == "" {
		return nil, false, nil
	}
	limit = storeutil.DirectLimit(limit)
	// One extra row tells whether there is more.
	msgs, err := s.queryMessages(ctx, s.rst.direct, username, nanos(since), limit+1)
	if err != nil {
		return nil, false, err
	}
	msgs, more := storeutil.Trim(msgs, limit)
	return msgs, more, nil
}

// defaultDeleteChunk bounds how many rows one retention transaction
// deletes, so that appends waiting on the writer are not held up for long.
const defaultDeleteChunk = 2000

const qDeleteBefore = `DELETE FROM messages WHERE rowid IN
	(SELECT rowid FROM messages WHERE sent_at < ? LIMIT ?)`

// DeleteMessagesBefore deletes messages sent before t and returns how many
// it deleted. It works in chunks, each its own transaction, checking ctx
// between them; on error the count so far is returned with it. Sequence
// counters are kept, so new messages never reuse a deleted seq.
func (s *Store) DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error) {
	var total int64
	for {
		if err := s.check(ctx); err != nil {
			return total, err
		}
		res, err := s.w.ExecContext(ctx, qDeleteBefore, nanos(t), s.deleteChunk)
		if err != nil {
			return total, s.mapErr(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, s.mapErr(err)
		}
		total += n
		if n < int64(s.deleteChunk) {
			return total, nil
		}
	}
}

// CountMessages returns the number of stored messages.
func (s *Store) CountMessages(ctx context.Context) (int64, error) {
	return s.count(ctx, "SELECT count(*) FROM messages")
}

func (s *Store) count(ctx context.Context, q string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var n int64
	err := s.r.QueryRowContext(ctx, q).Scan(&n)
	return n, s.mapErr(err)
}
