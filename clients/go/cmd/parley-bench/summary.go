package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
)

// summary is a report in a few readable lines.
func summary(r report) string {
	var b strings.Builder
	status := "OK"
	if !r.OK {
		status = "FAIL: " + r.Problem
	}
	fmt.Fprintf(&b, "%s %s (run %s", r.Transport, r.Workload, r.Run)
	if r.Rate > 0 {
		fmt.Fprintf(&b, ", step %d", r.Step)
	}
	fmt.Fprintf(&b, "): %s\n", status)
	fmt.Fprintf(&b, "  setup %.1fs; %d connections in %.2fs (%.0f/s, connect p50 %.1f p99 %.1f ms), %d failed\n",
		r.SetupS, r.Conns, r.ConnectS, r.ConnectRate, lat(r.ConnectLatency).P50, lat(r.ConnectLatency).P99, r.ConnectFailures)
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  %d rooms x %d members, %d publishers each at %g msg/s, %d B: offered %.0f deliveries/s\n",
			r.Rooms, r.Members, r.Publishers, r.Rate, r.Size, r.OfferedPerS)
		fmt.Fprintf(&b, "  sent %d; received %d of %d (lost %d, duplicates %d, out of order %d, late %d) over %.2fs = %.0f deliveries/s\n",
			r.Sent, r.Received, r.Expected, r.Lost, r.Dups, r.OOO, r.Late, r.DurationS, r.DeliveredPerS)
		l := lat(r.Latency)
		fmt.Fprintf(&b, "  latency p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms\n", l.P50, l.P90, l.P99, l.Max)
		if r.LatencySameNode != nil {
			for _, x := range []struct {
				name string
				n    int64
				l    latency
			}{{"same node", r.ReceivedSameNode, *r.LatencySameNode}, {"cross-node", r.ReceivedCrossNode, *r.LatencyCrossNode}} {
				fmt.Fprintf(&b, "  %s (%s): %d deliveries, p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms\n", x.name, r.Placement, x.n, x.l.P50, x.l.P90, x.l.P99, x.l.Max)
			}
		}
	}
	if r.Errors > 0 || r.Dropped > 0 {
		fmt.Fprintf(&b, "  in-band errors %d (%s); dropped by server %d (%s)\n", r.Errors, r.LastError, r.Dropped, r.DropReason)
	}
	if s := r.Server; s != nil {
		if s.Error != "" {
			fmt.Fprintf(&b, "  server pid %d: %s\n", s.PID, s.Error)
		} else {
			fmt.Fprintf(&b, "  server: %.2f CPU-s", s.CPUSeconds)
			if s.CPUUsPerDeliv > 0 {
				fmt.Fprintf(&b, ", %.2f CPU-us/delivery", s.CPUUsPerDeliv)
			}
			fmt.Fprintf(&b, "; RSS %.1f MiB (before %.1f, peak %.1f)", s.RSSMiB, s.RSSBeforeMiB, s.PeakRSSMiB)
			if s.RSSPerConnKiB != 0 {
				fmt.Fprintf(&b, ", %.1f KiB/connection (peak %.1f)", s.RSSPerConnKiB, s.PeakPerConnKiB)
			}
			if s.GoroutinesPerConn != 0 {
				fmt.Fprintf(&b, "; live heap %.1f KiB and %.2f goroutines per connection", s.HeapLivePerConnKiB, s.GoroutinesPerConn)
			}
			b.WriteString("\n")
		}
	}
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "  node %d (%s, pid %d): %d connections", n.Node, n.GRPCAddr, n.PID, n.Conns)
		if r.Rate > 0 {
			fmt.Fprintf(&b, ", %d rooms; sent %d, received %d", n.Rooms, n.Sent, n.Received)
			if n.CPUUsPerDeliv > 0 {
				fmt.Fprintf(&b, ", %.2f CPU-us/delivery", n.CPUUsPerDeliv)
			}
		}
		b.WriteString("\n")
		if n.Connect != nil {
			fmt.Fprintf(&b, "    connecting: %s\n", phaseLine(n.Connect))
		}
		if p := n.Phase; p != nil {
			label := "phase"
			switch {
			case r.Rate > 0:
				label = fmt.Sprintf("step (messages in its rooms %d, in the others' %d)", n.SentOwnRooms, n.SentElsewhere)
			case r.Workload == "idle":
				label = "at rest"
			case r.Workload == "storm":
				label = "storm"
			}
			fmt.Fprintf(&b, "    %s: %s\n", label, phaseLine(p))
		}
	}
	if len(r.AuxCPUConnect) > 0 {
		fmt.Fprintf(&b, "  around the servers while connecting: %s\n", auxLine(r.AuxCPUConnect))
	}
	if len(r.AuxCPU) > 0 {
		fmt.Fprintf(&b, "  around the servers: %s\n", auxLine(r.AuxCPU))
	}
	fmt.Fprintf(&b, "  bench: %.2f CPU-s; load average %.2f -> %.2f", r.BenchCPUS, r.Load[0][0], r.Load[1][0])
	return b.String()
}

// phaseLine is one node's phase: CPU and the NATS counters.
func phaseLine(p *phaseStats) string {
	s := fmt.Sprintf("%.1fs, CPU %.2fs; NATS in %.0f msgs (%.0f/s), %.0f B (%.1f KiB/s); %.0f subscriptions; outbound dropped %.0f, filled from store %.0f, queued to sessions %.0f",
		p.Seconds, p.CPUSeconds, p.NATSMsgs, p.NATSMsgsPerS, p.NATSBytes, p.NATSBytesPerS/1024, p.Subscriptions, p.OutDropped, p.Filled, p.MessagesOut)
	if p.Commits > 0 {
		s += fmt.Sprintf("; %.0f commits (%.2f ms, %.1f messages each; %.0f over 25 ms)", p.Commits, p.CommitMeanMs, p.MsgsPerCommit, p.CommitsOver25ms)
	}
	if p.Error != "" {
		s += " (" + p.Error + ")"
	}
	return s
}

func auxLine(m map[string]float64) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.2f CPU-s", n, m[n])
	}
	return strings.Join(parts, ", ")
}

func lat(l *latency) latency {
	if l == nil {
		return latency{}
	}
	return *l
}

// sideBySide prints one column per transport: its knee (the best passing
// step) when it has one, else its last step.
func sideBySide(results [][]report) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	cols := make([]report, 0, len(results))
	for _, reps := range results {
		if len(reps) == 0 {
			continue
		}
		r := reps[len(reps)-1]
		if k := knee(reps); k != nil {
			r = *k
		}
		cols = append(cols, r)
	}
	row := func(name string, f func(r report) string) {
		fmt.Fprint(tw, name+"\t")
		for _, r := range cols {
			fmt.Fprint(tw, f(r)+"\t")
		}
		fmt.Fprintln(tw)
	}
	num := func(format string, f func(r report) float64) func(report) string {
		return func(r report) string { return fmt.Sprintf(format, f(r)) }
	}
	srv := func(format string, f func(s *serverStats) float64) func(report) string {
		return func(r report) string {
			if r.Server == nil || r.Server.Error != "" {
				return "-"
			}
			return fmt.Sprintf(format, f(r.Server))
		}
	}
	row("", func(r report) string { return r.Transport })
	row("ok", func(r report) string {
		if r.OK {
			return "yes"
		}
		return "no"
	})
	row("rate/publisher", num("%g", func(r report) float64 { return r.Rate }))
	row("connections", num("%.0f", func(r report) float64 { return float64(r.Conns) }))
	row("connects/s", num("%.0f", func(r report) float64 { return r.ConnectRate }))
	row("connect p99 ms", num("%.1f", func(r report) float64 { return lat(r.ConnectLatency).P99 }))
	row("offered deliv/s", num("%.0f", func(r report) float64 { return r.OfferedPerS }))
	row("delivered/s", num("%.0f", func(r report) float64 { return r.DeliveredPerS }))
	row("expected", num("%.0f", func(r report) float64 { return float64(r.Expected) }))
	row("lost", num("%.0f", func(r report) float64 { return float64(r.Lost) }))
	row("dup / ooo", func(r report) string { return fmt.Sprintf("%d / %d", r.Dups, r.OOO) })
	row("p50 ms", num("%.2f", func(r report) float64 { return lat(r.Latency).P50 }))
	row("p90 ms", num("%.2f", func(r report) float64 { return lat(r.Latency).P90 }))
	row("p99 ms", num("%.2f", func(r report) float64 { return lat(r.Latency).P99 }))
	row("max ms", num("%.2f", func(r report) float64 { return lat(r.Latency).Max }))
	row("server CPU s", srv("%.2f", func(s *serverStats) float64 { return s.CPUSeconds }))
	row("CPU us/delivery", srv("%.2f", func(s *serverStats) float64 { return s.CPUUsPerDeliv }))
	row("server RSS MiB", srv("%.1f", func(s *serverStats) float64 { return s.RSSMiB }))
	row("peak RSS MiB", srv("%.1f", func(s *serverStats) float64 { return s.PeakRSSMiB }))
	row("RSS KiB/conn", srv("%.1f", func(s *serverStats) float64 { return s.RSSPerConnKiB }))
	row("live heap KiB/conn", srv("%.1f", func(s *serverStats) float64 { return s.HeapLivePerConnKiB }))
	row("goroutines/conn", srv("%.2f", func(s *serverStats) float64 { return s.GoroutinesPerConn }))
	row("bench CPU s", num("%.2f", func(r report) float64 { return r.BenchCPUS }))
	row("load avg", func(r report) string { return fmt.Sprintf("%.2f->%.2f", r.Load[0][0], r.Load[1][0]) })
	_ = tw.Flush()
	return b.String()
}
