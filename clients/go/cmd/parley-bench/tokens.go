package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
)

// user is a benchmark account and its access token.
type user struct{ name, token string }

// tokenSource hands out n distinct users with tokens.
type tokenSource interface {
	users(ctx context.Context, n int) ([]user, error)
}

// benchPassword is every registered bench user's password.
const benchPassword = "bench-password"

// registrar registers users named bench-<run>-<i> with Auth.Register over
// native gRPC. Registration costs the server an argon2id hash (about
// 30 ms of CPU), so it runs with small concurrency, before the measured
// phase. With file set, users listed there by an earlier run are reused
// and newly registered ones appended ("name token" lines); their access
// tokens expire after the server's --access-ttl (15m by default). Users
// are reused by later runs of the same process too. Safe for concurrent
// use.
type registrar struct {
	addr        string
	run         string
	concurrency int
	file        string

	mu    sync.Mutex
	known []user // registered by this process
}

func (r *registrar) users(ctx context.Context, n int) ([]user, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.known
	if len(have) == 0 {
		var err error
		if have, err = readUsers(r.file); err != nil {
			return nil, err
		}
	}
	if len(have) >= n {
		r.known = have
		return have[:n], nil
	}
	cc, err := grpc.NewClient("passthrough:///"+r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	auth := chatv1.NewAuthClient(cc)
	out := make([]user, n)
	copy(out, have)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(r.concurrency, 1))
	for i := len(have); i < n; i++ {
		g.Go(func() error {
			name := fmt.Sprintf("bench-%s-%d", r.run, i)
			var resp *chatv1.RegisterResponse
			var err error
			for {
				resp, err = auth.Register(gctx, &chatv1.RegisterRequest{Username: name, Password: benchPassword})
				if wait, ok := retryAfter(err); ok {
					// The server bounds password hashes in flight and asks
					// the excess to come back: honour it, as a client must.
					select {
					case <-time.After(wait):
						continue
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				break
			}
			if err != nil {
				return fmt.Errorf("register %s: %w", name, err)
			}
			out[i] = user{name: name, token: resp.GetTokens().GetAccessToken()}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if r.file != "" {
		if err := appendUsers(r.file, out[len(have):]); err != nil {
			return nil, err
		}
	}
	r.known = out
	return out, nil
}

// retryAfter reports whether err is Unavailable and how long the server
// asked to wait (its RetryInfo, else a second).
func retryAfter(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return time.Second, true
}

func readUsers(file string) ([]user, error) {
	if file == "" {
		return nil, nil
	}
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []user
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, tok, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if ok {
			out = append(out, user{name: name, token: tok})
		}
	}
	return out, sc.Err()
}

func appendUsers(file string, us []user) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, u := range us {
		fmt.Fprintf(w, "%s %s\n", u.name, u.token)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// minter signs HS256 tokens for the Socket.IO reference server, which
// trusts any token its JWT_SECRET verifies: no registration needed.
type minter struct {
	secret []byte
	run    string
}

func (m minter) users(_ context.Context, n int) ([]user, error) {
	if len(m.secret) == 0 {
		return nil, errors.New("socketio: no secret; set --sio-secret or PARLEY_BENCH_SIO_SECRET to the server's JWT_SECRET")
	}
	out := make([]user, n)
	for i := range out {
		name := fmt.Sprintf("bench-%s-%d", m.run, i)
		out[i] = user{name: name, token: mintHS256(m.secret, name, 2*time.Hour)}
	}
	return out, nil
}

// fixedUsers hands out a fixed list in order (tests).
type fixedUsers struct {
	mu   sync.Mutex
	list []user
}

func (f *fixedUsers) users(_ context.Context, n int) ([]user, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n > len(f.list) {
		return nil, fmt.Errorf("want %d users, have %d", n, len(f.list))
	}
	out := f.list[:n]
	f.list = f.list[n:]
	return out, nil
}

// parleyMinter signs Parley access tokens for accounts that already exist
// (made in bulk by scripts/bench-cluster.sh, which inserts them into its
// own schema): prefix+offset .. prefix+offset+n-1. The tokens carry the
// claims parleyd's own issuer signs (sub, role, iss, aud, iat, exp, jti)
// with the cluster's HS256 secret (the nodes' --jwt-secret-file), so every
// connect is checked as any other: signature, claims, and the account's
// stored role and state. It replaces registration, whose argon2id hash
// costs about 30 ms of server CPU per user (15 minutes of both cores for
// 30,000 users).
type parleyMinter struct {
	secret           []byte
	prefix           string
	offset           int
	ttl              time.Duration
	issuer, audience string
}

func (m parleyMinter) users(_ context.Context, n int) ([]user, error) {
	out := make([]user, n)
	for i := range out {
		name := fmt.Sprintf("%s%d", m.prefix, m.offset+i)
		tok, err := mintParley(m.secret, name, m.issuer, m.audience, m.ttl)
		if err != nil {
			return nil, err
		}
		out[i] = user{name: name, token: tok}
	}
	return out, nil
}

// mintParley signs an HS256 access token as parleyd's issuer does.
func mintParley(secret []byte, sub, iss, aud string, ttl time.Duration) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	now := time.Now().Unix()
	claims, err := json.Marshal(map[string]any{
		"role": "user", "iss": iss, "sub": sub, "aud": []string{aud},
		"iat": now, "exp": now + int64(ttl/time.Second), "jti": hex.EncodeToString(jti),
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(s))
	return s + "." + enc.EncodeToString(mac.Sum(nil)), nil
}

// readSecretFile reads a hex HS256 secret as parleyd's --jwt-secret-file
// holds it.
func readSecretFile(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 32 {
		return nil, fmt.Errorf("%s: not a hex secret of at least 32 bytes", file)
	}
	return secret, nil
}
