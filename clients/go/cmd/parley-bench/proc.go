package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procSample is a process's CPU time and memory at one moment, from
// /proc/PID/stat (utime+stime) and /proc/PID/status (VmRSS, VmHWM).
type procSample struct {
	cpu      time.Duration
	rss, hwm int64 // bytes
}

// clockTick is USER_HZ, which Linux fixes at 100 on every architecture
// Go supports.
const clockTick = 10 * time.Millisecond

// sampleProc reads pid's sample; pid 0 means this process.
func sampleProc(pid int) (procSample, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var s procSample
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, err
	}
	// The command name may hold spaces; the fields after it start with state
	// (field 3), so utime and stime (14 and 15) are its 12th and 13th.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("%s/stat: no ')'", dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("%s/stat: bad utime/stime", dir)
	}
	s.cpu = time.Duration(ut+st) * clockTick
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &s.rss
		case "VmHWM":
			dst = &s.hwm
		default:
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		*dst = kb << 10
	}
	return s, nil
}

// resetPeak resets pid's VmHWM to its current RSS, so that the peak covers
// the measured phase only (not, say, password hashing during setup).
func resetPeak(pid int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// loadAvg returns the 1-, 5- and 15-minute load averages.
func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

// procWatch measures a server process (when pid > 0) and this process
// over one phase.
type procWatch struct {
	pid           int
	server, self  procSample
	serverErr     error
	loadAtStart   [3]float64
	peakResetDone bool
}

func startWatch(pid int) *procWatch {
	w := &procWatch{pid: pid, loadAtStart: loadAvg()}
	if pid > 0 {
		w.peakResetDone = resetPeak(pid) == nil
		w.server, w.serverErr = sampleProc(pid)
	}
	w.self, _ = sampleProc(0)
	return w
}

// serverStats is what a report says about the server process.
type serverStats struct {
	PID            int     `json:"pid"`
	PIDs           []int   `json:"pids,omitempty"` // several nodes: the figures are their sums
	CPUSeconds     float64 `json:"cpu_s"`
	CPUUsPerDeliv  float64 `json:"cpu_us_per_delivery,omitempty"`
	RSSMiB         float64 `json:"rss_mib"`
	RSSBeforeMiB   float64 `json:"rss_before_mib"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	PeakIsPhase    bool    `json:"peak_is_phase_only"`
	RSSPerConnKiB  float64 `json:"rss_per_conn_kib,omitempty"`
	PeakPerConnKiB float64 `json:"peak_rss_per_conn_kib,omitempty"`
	// From --metrics-addr (Go servers): live heap after a forced GC, and
	// goroutines, per connection.
	HeapLivePerConnKiB float64 `json:"heap_live_per_conn_kib,omitempty"`
	GoroutinesPerConn  float64 `json:"goroutines_per_conn,omitempty"`
	Error              string  `json:"error,omitempty"`
}

// finish samples again; deliveries and conns (the connections opened
// during the phase) give the per-unit figures when positive.
func (w *procWatch) finish(deliveries, conns int64) (srv *serverStats, selfCPU float64, load [2][3]float64) {
	self, _ := sampleProc(0)
	selfCPU = (self.cpu - w.self.cpu).Seconds()
	load = [2][3]float64{w.loadAtStart, loadAvg()}
	if w.pid <= 0 {
		return nil, selfCPU, load
	}
	srv = &serverStats{PID: w.pid}
	if w.serverErr != nil {
		srv.Error = w.serverErr.Error()
		return srv, selfCPU, load
	}
	end, err := sampleProc(w.pid)
	if err != nil {
		srv.Error = err.Error()
		return srv, selfCPU, load
	}
	const mib = 1 << 20
	srv.CPUSeconds = (end.cpu - w.server.cpu).Seconds()
	srv.RSSMiB, srv.RSSBeforeMiB = float64(end.rss)/mib, float64(w.server.rss)/mib
	srv.PeakRSSMiB, srv.PeakIsPhase = float64(end.hwm)/mib, w.peakResetDone
	if deliveries > 0 {
		srv.CPUUsPerDeliv = srv.CPUSeconds * 1e6 / float64(deliveries)
	}
	if conns > 0 {
		srv.RSSPerConnKiB = float64(end.rss-w.server.rss) / 1024 / float64(conns)
		if w.peakResetDone {
			srv.PeakPerConnKiB = float64(end.hwm-w.server.rss) / 1024 / float64(conns)
		}
	}
	return srv, selfCPU, load
}
