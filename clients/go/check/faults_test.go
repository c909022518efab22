package check_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/clients/go/check"
)

// parleyd is a real parleyd process the test starts, kills and restarts.
type parleyd struct {
	t       *testing.T
	bin     string
	dataDir string
	addr    string
	args    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs bytes.Buffer
	exit chan error
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildParleyd builds the server binary once per test process.
func buildParleyd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-check-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "parleyd")
		out, err := exec.Command("go", "build", "-o", builtBin, "github.com/parleychat/parley/server/cmd/parleyd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build parleyd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newParleyd(t *testing.T) *parleyd { return newParleydArgs(t) }

// newParleydArgs is newParleyd with more flags (a cluster's).
func newParleydArgs(t *testing.T, args ...string) *parleyd {
	p := &parleyd{t: t, bin: buildParleyd(t), dataDir: t.TempDir(), addr: freePort(t), args: args}
	p.start()
	t.Cleanup(func() {
		p.mu.Lock()
		cmd, exit := p.cmd, p.exit
		p.mu.Unlock()
		if cmd != nil {
			cmd.Process.Kill()
			<-exit
		}
		if t.Failed() {
			t.Logf("parleyd logs:\n%s", p.logs.String())
		}
	})
	return p
}

// start runs parleyd on the same data directory and port as before and
// waits until it accepts connections.
func (p *parleyd) start() {
	p.t.Helper()
	args := append([]string{"--data-dir", p.dataDir, "--grpc-addr", p.addr, "--http-addr", "off", "--metrics-addr", "off",
		"--log-level", "warn", "--rate-limits", "message=unlimited,join=unlimited,connect=unlimited,other=unlimited"}, p.args...)
	cmd := exec.Command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = &p.logs, &p.logs
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait() }()
	p.mu.Lock()
	p.cmd, p.exit = cmd, exit
	p.mu.Unlock()
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			p.t.Fatalf("parleyd did not listen on %s:\n%s", p.addr, p.logs.String())
		}
	}
}

// signal sends sig and waits for the process to exit, for at most limit.
func (p *parleyd) signal(sig syscall.Signal, limit time.Duration) (time.Duration, error) {
	p.mu.Lock()
	cmd, exit := p.cmd, p.exit
	p.cmd = nil
	p.mu.Unlock()
	begin := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		return 0, err
	}
	select {
	case err := <-exit:
		return time.Since(begin), err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-exit
		return time.Since(begin), fmt.Errorf("parleyd did not exit within %s of %v", limit, sig)
	}
}

// faultUnderLoad runs the checker against a real parleyd and, once every
// publisher has an acknowledged message, strikes it with sig and starts it
// again on the same data; the checker's clients reconnect and resume.
func faultUnderLoad(t *testing.T, sig syscall.Signal) {
	p := newParleyd(t)
	struck := make(chan error, 1)
	cfg := check.Config{
		Addrs: []string{p.addr}, Publishers: 3, Subscribers: 3, Rooms: 2, DMs: true,
		Duration: 4 * time.Second, Rate: 25, SendTimeout: 30 * time.Second, Settle: 10 * time.Second,
		Published: func() {
			time.Sleep(500 * time.Millisecond) // under load, not at its first message
			// The default shutdown grace is 10s; SIGKILL ends at once.
			took, err := p.signal(sig, 15*time.Second)
			if err == nil || sig == syscall.SIGKILL {
				t.Logf("parleyd ended %s after %v (%v)", took.Round(time.Millisecond), sig, err)
				err = nil
			}
			p.start()
			struck <- err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	rep, err := check.Check(ctx, cfg)
	if err != nil {
		t.Fatalf("check: %v (report %+v)", err, rep)
	}
	select {
	case err := <-struck:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("the fault never struck")
	}
	t.Logf("%+v", *rep)
	if rep.Reconnects == 0 {
		t.Errorf("no client reconnected: the fault did not reach them")
	}
	if !rep.OK {
		t.Errorf("after %v under load: acked lost %d (deliveries %d, history %d), duplicated %d, reordered %d, live gaps %d, history gaps %d, stored duplicates %d",
			sig, rep.AckedLost, rep.LostDeliveries, rep.LostFromHistory, rep.Duplicated, rep.Reordered, rep.LiveGaps, rep.HistoryGaps, rep.StoredDuplicates)
	}
}

// TestKill9UnderLoad: parleyd killed with SIGKILL mid-load and restarted
// loses no acknowledged message, delivers none twice or out of order.
func TestKill9UnderLoad(t *testing.T) { faultUnderLoad(t, syscall.SIGKILL) }

// TestSIGTERMUnderLoad: parleyd stopped with SIGTERM mid-load exits
// within its grace and, restarted, loses and duplicates nothing.
func TestSIGTERMUnderLoad(t *testing.T) { faultUnderLoad(t, syscall.SIGTERM) }
