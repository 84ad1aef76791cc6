// Package mlog is nmisim's stand-in for monis.app/mlog v0.0.4, the logging library of Azure Workload
// Identity v1.6.0 (see go.mod for why). It offers the part of that API AWI's webhook, proxy and azwi call,
// with the same level names and the same order of levels (warning < info < debug < trace < all), so
// AWI's own code (e.g. the webhook's currentLogLevel, which becomes the injected proxy's --log-level)
// behaves as upstream's. Output: one JSON object per line on stderr (go-logr's funcr), or "cli" text.
package mlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// LogLevel names a verbosity; the empty level is info.
type LogLevel string

// LogFormat names an output format.
type LogFormat string

// The levels, least verbose first.
const (
	LevelWarning LogLevel = "warning"
	LevelInfo    LogLevel = "info"
	LevelDebug   LogLevel = "debug"
	LevelTrace   LogLevel = "trace"
	LevelAll     LogLevel = "all"
)

// The formats: JSON for servers, CLI (plain text) for command lines; text is JSON's deprecated alias.
const (
	FormatJSON LogFormat = "json"
	FormatText LogFormat = "text"
	FormatCLI  LogFormat = "cli"
)

// LogSpec is a level and a format.
type LogSpec struct {
	Level  LogLevel  `json:"level,omitempty"`
	Format LogFormat `json:"format,omitempty"`
}

// verbosity of each level: a message of level L is written when the global verbosity is >= verbosity(L)
func verbosity(l LogLevel) (int, bool) {
	switch l {
	case LevelWarning:
		return 0, true
	case "", LevelInfo:
		return 2, true
	case LevelDebug:
		return 4, true
	case LevelTrace:
		return 6, true
	case LevelAll:
		return 108, true
	}
	return 0, false
}

var (
	global    atomic.Int64 // the verbosity in force
	mu        sync.RWMutex
	sink      = newSink(FormatJSON)
	errLevel  = errors.New("invalid log level, valid choices are the empty string, warning, info, debug, trace and all")
	errFormat = errors.New("invalid log format, valid choices are the empty string, json, text and cli")
)

func init() { global.Store(2) }

func newSink(format LogFormat) logr.Logger {
	opts := funcr.Options{LogTimestamp: true, Verbosity: 1 << 30, TimestampFormat: "2006-01-02T15:04:05.000000Z07:00"}
	write := func(prefix, args string) {
		if prefix != "" {
			fmt.Fprintln(os.Stderr, prefix+": "+args)
		} else {
			fmt.Fprintln(os.Stderr, args)
		}
	}
	if format == FormatCLI {
		opts.LogTimestamp = false
		return funcr.New(write, opts)
	}
	return funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, opts)
}

// ValidateAndSetLogLevelAndFormatGlobally sets the level and the format of every logger.
func ValidateAndSetLogLevelAndFormatGlobally(_ context.Context, spec LogSpec) error {
	v, ok := verbosity(spec.Level)
	if !ok {
		return errLevel
	}
	switch spec.Format {
	case "", FormatJSON, FormatText, FormatCLI:
	default:
		return errFormat
	}
	mu.Lock()
	sink = newSink(spec.Format)
	mu.Unlock()
	global.Store(int64(v))
	return nil
}

// Enabled tells whether messages of level l are written.
func Enabled(l LogLevel) bool {
	v, ok := verbosity(l)
	return ok && int64(v) <= global.Load()
}

// Setup prepares logging and returns the function that flushes it (writes are unbuffered: nothing to do).
func Setup() func() { return func() {} }

// Logger writes leveled messages with key/value pairs.
type Logger interface {
	Error(msg string, err error, keysAndValues ...any)
	Warning(msg string, keysAndValues ...any)
	Info(msg string, keysAndValues ...any)
	Debug(msg string, keysAndValues ...any)
	Trace(msg string, keysAndValues ...any)
	All(msg string, keysAndValues ...any)
	WithValues(keysAndValues ...any) Logger
	WithName(name string) Logger
}

type logger struct {
	names  []string
	values []any
}

// New returns a logger with no name and no values.
func New() Logger { return logger{} }

func (l logger) WithValues(keysAndValues ...any) Logger {
	return logger{names: l.names, values: append(append([]any{}, l.values...), keysAndValues...)}
}

func (l logger) WithName(name string) Logger {
	return logger{names: append(append([]string{}, l.names...), name), values: l.values}
}

func (l logger) current() logr.Logger {
	mu.RLock()
	r := sink
	mu.RUnlock()
	for _, n := range l.names {
		r = r.WithName(n)
	}
	return r.WithValues(l.values...)
}

func (l logger) at(level LogLevel, msg string, keysAndValues []any) {
	if !Enabled(level) {
		return
	}
	v, _ := verbosity(level)
	l.current().V(v).Info(msg, append([]any{"level", string(level)}, keysAndValues...)...)
}

func (l logger) Error(msg string, err error, keysAndValues ...any) {
	l.current().Error(err, msg, keysAndValues...)
}
func (l logger) Warning(msg string, kv ...any) { l.at(LevelWarning, msg, kv) }
func (l logger) Info(msg string, kv ...any)    { l.at(LevelInfo, msg, kv) }
func (l logger) Debug(msg string, kv ...any)   { l.at(LevelDebug, msg, kv) }
func (l logger) Trace(msg string, kv ...any)   { l.at(LevelTrace, msg, kv) }
func (l logger) All(msg string, kv ...any)     { l.at(LevelAll, msg, kv) }

// The package-level functions log without a name.
func Error(msg string, err error, keysAndValues ...any) { New().Error(msg, err, keysAndValues...) }
func Warning(msg string, kv ...any)                     { New().Warning(msg, kv...) }
func Info(msg string, kv ...any)                        { New().Info(msg, kv...) }
func Debug(msg string, kv ...any)                       { New().Debug(msg, kv...) }
func Trace(msg string, kv ...any)                       { New().Trace(msg, kv...) }
func All(msg string, kv ...any)                         { New().All(msg, kv...) }

// Fatal logs err and exits 1.
func Fatal(err error, keysAndValues ...any) {
	New().Error("fatal error", err, keysAndValues...)
	os.Exit(1)
}

// Logr is a logr.Logger that writes through this package at its level (controller-runtime's logger):
// logr's V(n) is written when n is at most the global verbosity less info's.
func Logr() logr.Logger { return logr.New(&bridge{}) }

type bridge struct {
	names  []string
	values []any
}

func (b *bridge) Init(logr.RuntimeInfo) {}
func (b *bridge) Enabled(level int) bool {
	info, _ := verbosity(LevelInfo)
	return int64(info+level) <= global.Load()
}
func (b *bridge) Info(level int, msg string, kv ...any) {
	l := logger{names: b.names, values: b.values}
	info, _ := verbosity(LevelInfo)
	l.current().V(info+level).Info(msg, kv...)
}
func (b *bridge) Error(err error, msg string, kv ...any) {
	logger{names: b.names, values: b.values}.Error(msg, err, kv...)
}
func (b *bridge) WithValues(kv ...any) logr.LogSink {
	return &bridge{names: b.names, values: append(append([]any{}, b.values...), kv...)}
}
func (b *bridge) WithName(name string) logr.LogSink {
	return &bridge{names: append(append([]string{}, b.names...), name), values: b.values}
}

// WithName is New().WithName(name).
func WithName(name string) Logger { return New().WithName(name) }

// WithValues is New().WithValues(keysAndValues...).
func WithValues(keysAndValues ...any) Logger { return New().WithValues(keysAndValues...) }
