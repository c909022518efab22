package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/parleychat/parley/internal/testenv"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

var healthServices = []string{"", "chat.v1.Chat", "chat.v1.Auth", "chat.v1.Admin"}

// TestProbes: /healthz and /readyz answer on the HTTP listener (not the
// web app's index.html) and on the metrics listener; gRPC health answers
// for each service.
func TestProbes(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.Static = fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>Parley</title>")}}
	}})
	for _, base := range []string{"http://" + srv.HTTPAddr(), "http://" + srv.MetricsAddr()} {
		if code, body := getStatus(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("%s/healthz = %d %q, want 200 \"ok\"", base, code, body)
		}
		if code, body := getStatus(t, base+"/readyz"); code != http.StatusOK || body != "ready\n" {
			t.Errorf("%s/readyz = %d %q, want 200 \"ready\"", base, code, body)
		}
	}
	// The app still owns every other path.
	if code, body := getStatus(t, "http://"+srv.HTTPAddr()+"/rooms/general"); code != http.StatusOK || !strings.Contains(body, "Parley") {
		t.Errorf("app route = %d %q", code, body)
	}
	health := healthpb.NewHealthClient(srv.Dial(t))
	for _, svc := range healthServices {
		r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v", svc, r, err)
		}
	}
}

// TestReadyzFailsWhenTheStoreIsUnreachable puts a proxy of the test's own
// between the server and PostgreSQL and closes it: /readyz turns 503 with
// the reason, /healthz stays 200, and gRPC health follows readiness.
func TestReadyzFailsWhenTheStoreIsUnreachable(t *testing.T) {
	t.Parallel()
	dbURL, err := url.Parse(testenv.PostgresSchema(t, "parley_test_"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, dbURL.Host) // storefault_test.go
	dbURL.Host = proxy.addr
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.DatabaseURL = dbURL.String()
	}})
	health := healthpb.NewHealthClient(srv.Dial(t))
	for _, base := range []string{"http://" + srv.HTTPAddr(), "http://" + srv.MetricsAddr()} {
		if code, body := getStatus(t, base+"/readyz"); code != http.StatusOK {
			t.Fatalf("%s/readyz with the store up = %d %q", base, code, body)
		}
	}

	proxy.down()
	deadline := time.Now().Add(waitFor) // a result is reused for a second
	for _, base := range []string{"http://" + srv.HTTPAddr(), "http://" + srv.MetricsAddr()} {
		for {
			code, body := getStatus(t, base+"/readyz")
			if code == http.StatusServiceUnavailable && strings.Contains(body, "store unreachable") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/readyz with the store down = %d %q, want 503 naming the store", base, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code, _ := getStatus(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("%s/healthz with the store down = %d (the process is alive)", base, code)
		}
	}
	// gRPC health notices on its next readiness check.
	deadline = time.Now().Add(waitFor)
	for _, svc := range healthServices {
		for {
			r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("health %q with the store down = %v, %v", svc, r, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestReadyzFailsWhenNATSIsUnreachable: a clustered node whose NATS link
// is cut (a proxy of the test's own, closed) is not ready.
func TestReadyzFailsWhenNATSIsUnreachable(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host) // storefault_test.go
	u.Host = proxy.addr
	srv := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.NATSURL, c.NATSSubject = u.String(), "parley.test.readyz."+strings.ReplaceAll(t.Name(), "/", ".")
	}})
	metrics := "http://" + srv.MetricsAddr()
	if code, body := getStatus(t, metrics+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with NATS up = %d %q", code, body)
	}
	proxy.down()
	deadline := time.Now().Add(waitFor)
	for {
		code, body := getStatus(t, metrics+"/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "NATS") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz with NATS cut = %d %q, want 503 naming NATS", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
