package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/parleychat/parley/clients/go/parley"
)

// credentials is the stored file: tokens per server, how each server is
// reached, and the server of the last login.
type credentials struct {
	Default string                   `json:"default,omitempty"`
	Servers map[string]parley.Tokens `json:"servers"`
	// Transports holds the --tls and --ca each server was logged in with.
	Transports map[string]transport `json:"transports,omitempty"`
}

// transport is how to dial a server: TLS, and a CA file (absolute path) to
// trust besides the system roots.
type transport struct {
	TLS bool   `json:"tls,omitempty"`
	CA  string `json:"ca,omitempty"`
}

// store reads and writes credentials.json. The file is 0600 in a 0700
// directory and replaced atomically. Safe for concurrent use within a
// process.
type store struct {
	path string
}

var storeMu sync.Mutex

func (s *store) load() (credentials, error) {
	c := credentials{Servers: map[string]parley.Tokens{}, Transports: map[string]transport{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, err
	}
	if c.Servers == nil {
		c.Servers = map[string]parley.Tokens{}
	}
	if c.Transports == nil {
		c.Transports = map[string]transport{}
	}
	return c, nil
}

func (s *store) save(c credentials) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(s.path), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), s.path)
}

func (s *store) get(server string) (parley.Tokens, bool, error) {
	storeMu.Lock()
	defer storeMu.Unlock()
	c, err := s.load()
	if err != nil {
		return parley.Tokens{}, false, err
	}
	t, ok := c.Servers[server]
	return t, ok, nil
}

// transport is how server was reached at login; ok is false for a server
// never logged in to.
func (s *store) transport(server string) (transport, bool, error) {
	storeMu.Lock()
	defer storeMu.Unlock()
	c, err := s.load()
	if err != nil {
		return transport{}, false, err
	}
	t, ok := c.Transports[server]
	return t, ok, nil
}

// login stores t for server with how it was reached, and makes server the
// default.
func (s *store) login(server string, t parley.Tokens, tr transport) error {
	storeMu.Lock()
	defer storeMu.Unlock()
	c, err := s.load()
	if err != nil {
		return err
	}
	c.Servers[server] = t
	if tr == (transport{}) {
		delete(c.Transports, server)
	} else {
		c.Transports[server] = tr
	}
	c.Default = server
	return s.save(c)
}

// put stores t for server; makeDefault also makes server the default.
func (s *store) put(server string, t parley.Tokens, makeDefault bool) error {
	storeMu.Lock()
	defer storeMu.Unlock()
	c, err := s.load()
	if err != nil {
		return err
	}
	c.Servers[server] = t
	if makeDefault || c.Default == "" {
		c.Default = server
	}
	return s.save(c)
}

func (s *store) remove(server string) error {
	storeMu.Lock()
	defer storeMu.Unlock()
	c, err := s.load()
	if err != nil {
		return err
	}
	delete(c.Servers, server)
	delete(c.Transports, server)
	if c.Default == server {
		c.Default = ""
	}
	return s.save(c)
}
