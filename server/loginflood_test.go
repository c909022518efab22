package server_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/proto/gen/go/chat/v1"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/internal/auth"
	"github.com/parleychat/parley/server/servertest"
)

// TestLoginFloodIsBounded floods a server whose password hashes may use
// the memory of one hash with concurrent wrong-password logins, over gRPC
// and REST: each is refused as a bad login, or as Unavailable with a
// RetryInfo (REST: 503 with Retry-After), never anything else, and a
// right password logs in once the flood is over.
func TestLoginFloodIsBounded(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.PasswordHashMemory = auth.HashMemory
		c.RateLimits = "other=unlimited" // a flood from many addresses
	}})
	authc := chatv1.NewAuthClient(srv.Dial(t))
	ctx := context.Background()
	if _, err := authc.Register(ctx, &chatv1.RegisterRequest{Username: "alice", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}

	const flood = 40
	codesSeen := make(chan error, flood)
	var wg sync.WaitGroup
	for i := range flood {
		user := "alice"
		if i%4 == 0 {
			user = "nobody" // unknown users hash too, and are bounded the same
		}
		wg.Go(func() {
			_, err := authc.Login(ctx, &chatv1.LoginRequest{Username: user, Password: "wrong password"})
			codesSeen <- err
		})
	}
	wg.Wait()
	close(codesSeen)
	busy := 0
	for err := range codesSeen {
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unauthenticated:
		case codes.Unavailable:
			busy++
			var delay bool
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
					delay = true
				}
			}
			if !delay || !strings.Contains(st.Message(), "retry") {
				t.Fatalf("Unavailable without a retry delay: %v (details %v)", err, st.Details())
			}
		default:
			t.Fatalf("flooded login: %v", err)
		}
	}
	if busy == 0 {
		t.Fatalf("none of %d concurrent logins was refused with a retry delay; the limiter admits one hash", flood)
	}

	// REST maps it to 503 with Retry-After.
	type result struct {
		status int
		retry  string
	}
	results := make(chan result, flood)
	for range flood {
		wg.Go(func() {
			resp, err := http.Post("http://"+srv.HTTPAddr()+"/api/auth/login", "application/json", strings.NewReader(`{"username":"alice","password":"wrong password"}`))
			if err != nil {
				results <- result{status: -1, retry: err.Error()}
				return
			}
			resp.Body.Close()
			results <- result{resp.StatusCode, resp.Header.Get("Retry-After")}
		})
	}
	wg.Wait()
	close(results)
	busy = 0
	for r := range results {
		switch r.status {
		case http.StatusUnauthorized:
		case http.StatusServiceUnavailable:
			busy++
			if n, err := strconv.Atoi(r.retry); err != nil || n < 1 {
				t.Fatalf("503 with Retry-After %q", r.retry)
			}
		default:
			t.Fatalf("flooded REST login: %d %s", r.status, r.retry)
		}
	}
	if busy == 0 {
		t.Fatalf("none of %d concurrent REST logins got 503", flood)
	}

	if _, err := authc.Login(ctx, &chatv1.LoginRequest{Username: "alice", Password: "correct horse"}); err != nil {
		t.Fatalf("login after the flood: %v", err)
	}
}
