package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parleychat/parley/server/internal/store"
	"github.com/parleychat/parley/server/internal/store/groupcommit"
	"github.com/parleychat/parley/server/internal/store/storefault"
	"github.com/parleychat/parley/server/internal/store/storeutil"
)

type appendReq struct {
	groupcommit.Slot[appendResult]
	msg    store.Message
	sealed []byte // sealed Text, nil when no key is configured
}

type appendResult struct {
	msg store.Message
	dup bool
	err error
}

// Limits on writing one batch.
const (
	// DefaultWriteTimeout is the default Config.WriteTimeout.
	DefaultWriteTimeout = 30 * time.Second
	// maxWriteAttempts bounds retries of a batch that lost a race with
	// another process (see retryable).
	maxWriteAttempts = 4
)

// AppendMessage stores m and returns it as stored, with ID (when empty: a
// new id that sorts by time), SentAt (when zero: now, UTC) and Seq (the
// conversation's next number, from 1, assigned in the same transaction as
// the insert) filled in; m.Seq is ignored.
//
// If m.ClientMsgID is set and the sender already has a message with that
// id, nothing is written and the original is returned with duplicate set.
// This holds within one group-commit batch too, and across processes
// sharing the database.
//
// AppendMessage returns only after the transaction holding m committed
// (see the package doc for what that guarantees). If ctx ends while m is
// still queued it returns ctx.Err() and m is not stored; once the writer
// has taken m it runs to completion and the real outcome is returned.
// A caller-chosen ID that is taken gives store.ErrExists. PostgreSQL text
// cannot hold NUL bytes or invalid UTF-8: a message with either in a text
// field is refused before it is queued.
func (s *Store) AppendMessage(ctx context.Context, m store.Message) (store.Message, bool, error) {
	if err := s.check(ctx); err != nil {
		return store.Message{}, false, err
	}
	if err := checkText(m); err != nil {
		return store.Message{}, false, err
	}
	m, sealed, err := storeutil.PrepareAppend(m, s.sealer)
	if err != nil {
		return store.Message{}, false, fmt.Errorf("postgres: %w", err)
	}
	req := &appendReq{msg: m, sealed: sealed}

	r, err := s.q.Do(ctx, req)
	if err != nil {
		return store.Message{}, false, err
	}
	return r.msg, r.dup, r.err
}

// checkText refuses strings PostgreSQL text columns cannot store, so that
// one such message fails alone instead of failing its whole batch. (Text
// is checked even when it will be sealed into bytea, so what is accepted
// does not depend on whether a key is configured.)
func checkText(m store.Message) error {
	for _, f := range [...]struct{ name, v string }{
		{"ID", m.ID}, {"Conversation", m.Conversation}, {"Sender", m.Sender}, {"Recipient", m.Recipient},
		{"ClientMsgID", m.ClientMsgID}, {"Text", m.Text}, {"FileID", m.FileID}, {"FileName", m.FileName},
		{"FileType", m.FileType},
	} {
		if strings.IndexByte(f.v, 0) >= 0 || !utf8.ValidString(f.v) {
			return fmt.Errorf("postgres: Message.%s holds a NUL byte or invalid UTF-8", f.name)
		}
	}
	return nil
}

// writeLoop is the single writer of messages. It runs until Close and the
// queue is empty.
func (s *Store) writeLoop() {
	defer close(s.done)
	batch := make([]*appendReq, 0, s.maxBatch)
	for {
		batch, _ = s.q.Take(batch[:0])
		if len(batch) == 0 {
			return
		}
		s.commitBatch(batch)
		clear(batch) // drop references so answered requests can be collected
	}
}

// commitBatch writes batch in one transaction and answers every request
// after the commit. A request that fails on its own (a taken id, a
// duplicate) fails alone. If the transaction fails on a value PostgreSQL
// refuses, the requests are written one by one so that only the culprit
// fails; any other error fails the whole batch.
func (s *Store) commitBatch(batch []*appendReq) {
	_, commit := s.q.StartCommit(batch)
	results, err := s.writeWithRetry(batch)
	commit.End(err)
	if err != nil && len(batch) > 1 && isolatable(err) {
		s.log.Warn("append batch refused, writing its messages one by one", "messages", len(batch), "err", err)
		for _, r := range batch {
			s.commitBatch([]*appendReq{r})
		}
		return
	}
	if err != nil {
		if !storefault.Unavailable(err) { // the server's fault log counts those
			s.log.Error("append batch failed", "messages", len(batch), "err", err)
		}
		err = s.mapErr(err)
		results = make([]appendResult, len(batch))
		for i := range results {
			results[i] = appendResult{err: err}
		}
	} else {
		s.batches.Add(1)
		s.appended.Add(int64(len(batch)))
	}
	for i, r := range batch {
		r.Answer(results[i])
	}
}

// writeWithRetry runs writeBatch, again when it lost a race that a fresh
// attempt resolves. Not any caller's context: a taken request must
// complete.
func (s *Store) writeWithRetry(batch []*appendReq) ([]appendResult, error) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.writeTO)
		results, err := s.writeBatch(ctx, batch)
		cancel()
		if err == nil || attempt == maxWriteAttempts || !retryable(err) {
			return results, err
		}
		s.retries.Add(1)
		s.log.Warn("append batch retried", "attempt", attempt, "messages", len(batch), "err", err)
	}
}

// retryable reports whether a fresh attempt at a batch can succeed where
// this one failed: another process committed a client message id or
// message id this batch was inserting after the batch looked them up (the
// retry then finds it), a deadlock or serialization failure, or a
// connection that failed before anything was sent.
func retryable(err error) bool {
	switch pgCode(err) {
	case codeUniqueViolation, codeDeadlockDetected, codeSerializationFailure:
		return true
	}
	return pgconn.SafeToRetry(err)
}

// isolatable reports whether err is PostgreSQL refusing a value (data
// exception, integrity violation, program limit): one request's doing,
// which writing the requests one by one confines to that request.
func isolatable(err error) bool {
	code := pgCode(err)
	return strings.HasPrefix(code, "22") || strings.HasPrefix(code, "23") || strings.HasPrefix(code, "54")
}

const (
	msgCols = `messages.id, messages.conversation, messages.seq, messages.sender, messages.recipient,
		coalesce(messages.client_msg_id, ''), messages.text, messages.text_sealed, coalesce(messages.file_id, ''),
		messages.file_name, messages.file_size, messages.file_type, messages.sent_at`

	// qDedup finds the stored originals of (sender, client_msg_id) pairs,
	// and qTakenIDs which caller-chosen ids are taken. Each array element
	// is looked up on its own (LATERAL ... LIMIT 1 keeps the planner from
	// turning them into a join): a plain join's generic plan, cached by the
	// connection while the table was small, would stay a sequential scan
	// as the table grows, where these stay single index probes.
	qDedup = `SELECT ` + msgCols + ` FROM unnest($1::text[], $2::text[]) AS k (sender, client_msg_id)
		CROSS JOIN LATERAL (SELECT * FROM messages
			WHERE messages.sender = k.sender AND messages.client_msg_id = k.client_msg_id LIMIT 1) AS messages`
	qTakenIDs = `SELECT messages.id FROM unnest($1::text[]) AS k (id)
		CROSS JOIN LATERAL (SELECT id FROM messages WHERE messages.id = k.id LIMIT 1) AS messages`

	// qBumpSeqs adds to each conversation's counter the number of messages
	// the batch appends to it, creating counters as needed, and returns the
	// new values. Rows are taken in key order, so the row locks (held until
	// COMMIT) are too: two batches, in any processes, never wait on each
	// other in a cycle.
	qBumpSeqs = `INSERT INTO conversations AS c (key, last_seq)
		SELECT key, n FROM unnest($1::text[], $2::bigint[]) AS u (key, n) ORDER BY key COLLATE "C"
		ON CONFLICT (key) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
		RETURNING key, last_seq`
	// qInsertMsgs inserts the batch's messages, in the arrays' order, each
	// with seq = its conversation's bumped counter minus "back", the number
	// of messages after it in the batch in the same conversation. (Were a
	// counter missing, seq would be NULL and the insert would fail.)
	qInsertMsgs = `INSERT INTO messages (conversation, seq, id, sender, recipient, client_msg_id, text, text_sealed,
			file_id, file_name, file_size, file_type, sent_at)
		SELECT u.conversation, (SELECT c.last_seq FROM conversations c WHERE c.key = u.conversation) - u.back,
			u.id, u.sender, u.recipient, nullif(u.client_msg_id, ''), u.text, u.text_sealed,
			nullif(u.file_id, ''), u.file_name, u.file_size, u.file_type, u.sent_at
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::bytea[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bigint[])
			AS u (conversation, back, id, sender, recipient, client_msg_id, text, text_sealed,
				file_id, file_name, file_size, file_type, sent_at)`
)

type original struct {
	msg    store.Message // Text holds the plaintext column
	sealed []byte
}

// writeBatch makes one attempt at writing batch, in two round trips on
// the writer's connection: a lookup of the client message ids and
// caller-chosen ids the batch could collide with, then one pipeline of
// BEGIN, qBumpSeqs, qInsertMsgs and COMMIT. On error nothing was written
// (or, if the connection died during COMMIT, the outcome is unknown, as
// with any database) and the results are nil.
func (s *Store) writeBatch(ctx context.Context, batch []*appendReq) ([]appendResult, error) {
	conn, err := s.w.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	originals, takenIDs, err := lookup(ctx, conn.Conn(), batch)
	if err != nil {
		return nil, err
	}

	// Decide each request in queue order, as if written one at a time.
	results := make([]appendResult, len(batch))
	dupOf := make([]int, len(batch)) // index+1 of the earlier request in the batch this one repeats
	var ins []int                    // requests to insert
	seen := make(map[string]int)     // dedup key -> index in batch
	ids := make(map[string]struct{}, len(batch))
	now := time.Now().UTC()
	for i, r := range batch {
		m := r.msg
		key := ""
		if m.ClientMsgID != "" {
			key = dedupKey(m.Sender, m.ClientMsgID)
			if j, ok := seen[key]; ok {
				dupOf[i] = j + 1
				continue
			}
			if o, ok := originals[key]; ok {
				msg := o.msg
				var err error
				msg.Text, err = s.openText(msg.Text, o.sealed)
				results[i] = appendResult{msg: msg, dup: true, err: err}
				continue
			}
		}
		if m.ID == "" {
			m.ID = s.ids.Next(now)
		} else if _, ok := takenIDs[m.ID]; ok {
			results[i] = appendResult{err: fmt.Errorf("%w: message id %q", store.ErrExists, m.ID)}
			continue
		} else if _, ok := ids[m.ID]; ok {
			results[i] = appendResult{err: fmt.Errorf("%w: message id %q", store.ErrExists, m.ID)}
			continue
		}
		ids[m.ID] = struct{}{}
		if m.SentAt.IsZero() {
			m.SentAt = now
		}
		results[i].msg = m
		if key != "" {
			seen[key] = i
		}
		ins = append(ins, i)
	}

	if len(ins) > 0 {
		if err := s.insert(ctx, conn.Conn(), batch, ins, results); err != nil {
			return nil, err
		}
	}
	for i, j := range dupOf {
		if j > 0 {
			results[i] = appendResult{msg: results[j-1].msg, dup: true}
		}
	}
	return results, nil
}

func dedupKey(sender, clientMsgID string) string { return sender + "\x00" + clientMsgID }

// lookup returns the stored originals of the batch's client message ids,
// by dedupKey, and which of its caller-chosen ids are taken, in one round
// trip (none if the batch has neither).
func lookup(ctx context.Context, conn *pgx.Conn, batch []*appendReq) (map[string]original, map[string]struct{}, error) {
	var senders, cmids, ids []string
	keys := make(map[string]struct{})
	for _, r := range batch {
		m := r.msg
		if m.ClientMsgID != "" {
			if k := dedupKey(m.Sender, m.ClientMsgID); !has(keys, k) {
				keys[k] = struct{}{}
				senders, cmids = append(senders, m.Sender), append(cmids, m.ClientMsgID)
			}
		}
		if m.ID != "" {
			ids = append(ids, m.ID)
		}
	}
	originals := make(map[string]original)
	takenIDs := make(map[string]struct{})
	b := &pgx.Batch{}
	if len(senders) > 0 {
		b.Queue(qDedup, senders, cmids).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				m, sealed, err := storeutil.ScanMessage(rows)
				if err != nil {
					return err
				}
				originals[dedupKey(m.Sender, m.ClientMsgID)] = original{m, sealed}
			}
			return rows.Err()
		})
	}
	if len(ids) > 0 {
		b.Queue(qTakenIDs, ids).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				takenIDs[id] = struct{}{}
			}
			return rows.Err()
		})
	}
	if b.Len() == 0 {
		return originals, takenIDs, nil
	}
	return originals, takenIDs, conn.SendBatch(ctx, b).Close()
}

func has(set map[string]struct{}, k string) bool {
	_, ok := set[k]
	return ok
}

// insert writes the requests ins (indexes into batch and results, whose
// msg holds the message to store) in one transaction, in one round trip,
// and fills in their seqs.
//
// The whole transaction is pipelined, COMMIT included, so the statements'
// results are read only after it committed: they cannot veto the commit.
// That is safe because both statements either fail (and COMMIT is then
// skipped) or do exactly what is asked: the upsert returns every key and
// the insert reads, for each message, a counter the upsert just wrote.
func (s *Store) insert(ctx context.Context, conn *pgx.Conn, batch []*appendReq, ins []int, results []appendResult) error {
	counts := make(map[string]int64)
	for _, i := range ins {
		counts[results[i].msg.Conversation]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ns := make([]int64, len(keys))
	for j, k := range keys {
		ns[j] = counts[k]
	}

	// back[i]: how many messages follow request i in its conversation, in
	// queue order; its seq will be the bumped counter minus that.
	back := make(map[int]int64, len(ins))
	for _, i := range ins {
		c := results[i].msg.Conversation
		counts[c]--
		back[i] = counts[c]
	}
	// Insert rows in dedup key order: a batch that has to wait for another
	// process's transaction holding the same client message ids then waits
	// in the same order as that one, so the two never deadlock.
	rows := slices.Clone(ins)
	slices.SortStableFunc(rows, func(a, b int) int {
		ma, mb := results[a].msg, results[b].msg
		return cmp.Or(strings.Compare(ma.Sender, mb.Sender), strings.Compare(ma.ClientMsgID, mb.ClientMsgID))
	})

	n := len(rows)
	var (
		convs, ids, senders, recipients, cmids = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		texts, fileIDs, fileNames, fileTypes   = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		backs, fileSizes, sentAts              = make([]int64, n), make([]int64, n), make([]int64, n)
		sealed                                 = make([][]byte, n) // nil elements are NULL
	)
	for j, i := range rows {
		m := results[i].msg
		backs[j] = back[i]
		convs[j], ids[j], senders[j], recipients[j], cmids[j] = m.Conversation, m.ID, m.Sender, m.Recipient, m.ClientMsgID
		texts[j], fileIDs[j], fileNames[j], fileTypes[j] = m.Text, m.FileID, m.FileName, m.FileType
		fileSizes[j], sentAts[j] = m.FileSize, nanos(m.SentAt)
		if batch[i].sealed != nil {
			texts[j], sealed[j] = "", batch[i].sealed
		}
	}

	lasts := make(map[string]int64, len(keys))
	var inserted int64
	var committed bool
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(qBumpSeqs, keys, ns).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k string
			var last int64
			if err := rows.Scan(&k, &last); err != nil {
				return err
			}
			lasts[k] = last
		}
		return rows.Err()
	})
	b.Queue(qInsertMsgs, convs, backs, ids, senders, recipients, cmids, texts, sealed,
		fileIDs, fileNames, fileSizes, fileTypes, sentAts).Exec(func(tag pgconn.CommandTag) error {
		inserted = tag.RowsAffected()
		return nil
	})
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		committed = tag.String() == "COMMIT" // an aborted transaction answers ROLLBACK
		return nil
	})
	err := conn.SendBatch(ctx, b).Close()
	if pc := conn.PgConn(); pc.TxStatus() != 'I' && !pc.IsClosed() {
		// Failed mid-transaction: end it so the connection is reusable (if
		// this fails too, the pool discards the connection on release).
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn.Exec(rctx, "ROLLBACK")
		cancel()
	}
	switch {
	case err != nil:
		return err
	case !committed:
		return errors.New("postgres: append transaction rolled back")
	case inserted != int64(n) || len(lasts) != len(keys):
		// Cannot happen (see above); the messages may be stored.
		return fmt.Errorf("postgres: append wrote %d of %d messages, %d of %d counters", inserted, n, len(lasts), len(keys))
	}
	for _, i := range ins {
		results[i].msg.Seq = lasts[results[i].msg.Conversation] - back[i]
	}
	return nil
}

// openText returns a message's text from its two columns.
func (s *Store) openText(text string, sealed []byte) (string, error) {
	t, err := storeutil.OpenText(s.sealer, text, sealed)
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	return t, nil
}

func (s *Store) queryMessages(ctx context.Context, q string, args ...any) ([]store.Message, error) {
	rows, err := s.db.Query(ctx, q, args...)
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
		WHERE conversation = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`
	qHistoryForward = `SELECT ` + msgCols + ` FROM messages
		WHERE conversation = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4`
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
			return s.queryMessages(ctx, qHistoryForward, conversation, after, before, n)
		}
		return s.queryMessages(ctx, qHistoryBackward, conversation, before, n)
	})
}

const qLastSeq = `SELECT last_seq FROM conversations WHERE key = $1`

// LastSeq returns the highest seq ever assigned in conversation, 0 if none.
// Retention does not lower it.
func (s *Store) LastSeq(ctx context.Context, conversation string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var seq int64
	err := s.db.QueryRow(ctx, qLastSeq, conversation).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return seq, s.mapErr(err)
}

// MaxDirectLimit caps DirectMessagesSince.
const MaxDirectLimit = storeutil.MaxDirectLimit

// The redundant test for a non-empty recipient lets PostgreSQL use the
// partial index messages_direct. Messages sent at the same instant come in
// id order (the sqlite store uses insertion order; the store's own ids
// follow it within a process).
const qDirectSince = `SELECT ` + msgCols + ` FROM messages
	WHERE recipient = $1 AND recipient <> '' AND sent_at > $2 ORDER BY sent_at, id LIMIT $3`

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
	msgs, err := s.queryMessages(ctx, qDirectSince, username, nanos(since), limit+1)
	if err != nil {
		return nil, false, err
	}
	msgs, more := storeutil.Trim(msgs, limit)
	return msgs, more, nil
}

// defaultDeleteChunk bounds how many rows one retention statement deletes,
// so that no transaction holds many row locks or much WAL for long.
const defaultDeleteChunk = 2000

// Oldest first, so every chunk is an index range scan from the start of
// messages_sent_at. It runs unprepared (pgx.QueryExecModeExec), planned
// afresh each time: a generic plan cached while the table was small would
// look the ctids up with a sequential scan.
const qDeleteBefore = `DELETE FROM messages WHERE ctid = ANY (ARRAY (
	SELECT ctid FROM messages WHERE sent_at < $1 ORDER BY sent_at LIMIT $2))`

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
		tag, err := s.db.Exec(ctx, qDeleteBefore, pgx.QueryExecModeExec, nanos(t), s.deleteChunk)
		if err != nil {
			return total, s.mapErr(err)
		}
		n := tag.RowsAffected()
		total += n
		if n < int64(s.deleteChunk) {
			return total, nil
		}
	}
}

// CountMessages returns the number of stored messages. It counts them, so
// it reads the whole table (or its smallest index).
func (s *Store) CountMessages(ctx context.Context) (int64, error) {
	return s.count(ctx, "SELECT count(*) FROM messages")
}

func (s *Store) count(ctx context.Context, q string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var n int64
	err := s.db.QueryRow(ctx, q).Scan(&n)
	return n, s.mapErr(err)
}
