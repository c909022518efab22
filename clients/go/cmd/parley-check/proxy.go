package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// runProxy is `parley-check proxy`: a plain TCP forwarder for fault
// scripts to put in front of a database. Stopping it with SIGSTOP stalls
// every connection (a database that hangs); killing it drops them all and
// refuses new ones (an outage); starting it again on the same address is
// the database coming back. The database itself is never touched.
func runProxy(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley-check proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	target := fs.String("target", "127.0.0.1:5432", "address to forward to")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "parley-check proxy: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "parley-check proxy: %s -> %s\n", ln.Addr(), *target)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() { defer wg.Done(); forward(ctx, c, *target) }()
	}
	wg.Wait()
	return 0
}

func forward(ctx context.Context, c net.Conn, target string) {
	defer c.Close()
	var d net.Dialer
	s, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); s.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done // either side ending ends both
}
