package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// envName is the environment variable a flag falls back to.
func envName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// lookupEnv is os.LookupEnv; tests replace it through cli.env.
type lookupEnv func(string) (string, bool)

// flags is a command's flag set whose flags fall back to PARLEY_*
// variables. A variable that does not parse is an error at Parse, not a
// silent default.
type flags struct {
	*flag.FlagSet
	env     lookupEnv
	envErrs []error
}

func newFlags(name string, env lookupEnv, out io.Writer, usage string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	f := &flags{FlagSet: fs, env: env}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintf(fs.Output(), "\nFlags of %s (one marked \"env X\" is also read from the variable X):\n", name)
		fs.PrintDefaults()
	}
	return f
}

func (f *flags) lookup(name string) (string, bool) {
	if f.env == nil {
		return "", false
	}
	return f.env(envName(name))
}

func (f *flags) str(name, def, usage string) *string {
	if v, ok := f.lookup(name); ok {
		def = v
	}
	return f.String(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) dur(name string, def time.Duration, usage string) *time.Duration {
	if v, ok := f.lookup(name); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: %w", envName(name), v, err))
		}
		def = d
	}
	return f.Duration(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) num(name string, def int64, usage string) *int64 {
	if v, ok := f.lookup(name); ok && v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: %w", envName(name), v, err))
		}
		def = n
	}
	return f.Int64(name, def, usage+" (env "+envName(name)+")")
}

func (f *flags) boolean(name string, usage string) *bool {
	def := false
	if v, ok := f.lookup(name); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: %w", envName(name), v, err))
		}
		def = b
	}
	return f.Bool(name, def, usage+" (env "+envName(name)+")")
}

// parse parses args, refusing positional arguments (a mistyped command
// must not be ignored) and unparsable environment values.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return err // flag has printed it with the usage
	}
	if len(f.envErrs) > 0 {
		return usageErrorf("%v", f.envErrs[0])
	}
	if f.NArg() > 0 {
		return usageErrorf("%s: unexpected argument %q", f.Name(), f.Arg(0))
	}
	return nil
}

// storeFlags are the flags every command shares to find the server's
// storage: the same names, defaults and variables as the server's.
type storeFlags struct {
	dataDir, databaseURL *string
}

func (f *flags) storeFlags() storeFlags {
	return storeFlags{
		dataDir:     f.str("data-dir", "data", "directory for the database, files and generated secret"),
		databaseURL: f.str("database-url", "", "PostgreSQL URL (postgres://user@host/db): keep messages and users there instead of SQLite in the data dir"),
	}
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// envOS is the process environment.
var envOS lookupEnv = os.LookupEnv
