package mlog

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// the most verbose level enabled, as AWI's webhook asks it (the injected proxy's --log-level)
func mostVerbose() LogLevel {
	for _, l := range []LogLevel{LevelAll, LevelTrace, LevelDebug, LevelInfo, LevelWarning} {
		if Enabled(l) {
			return l
		}
	}
	return "none"
}

func TestEachLevelEnablesItselfAndTheLessVerbose(t *testing.T) {
	for _, l := range []LogLevel{LevelWarning, LevelInfo, LevelDebug, LevelTrace, LevelAll} {
		if err := ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{Level: l, Format: FormatJSON}); err != nil {
			t.Fatal(err)
		}
		if got := mostVerbose(); got != l {
			t.Errorf("level %q: the most verbose enabled is %q", l, got)
		}
	}
	if err := ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{}); err != nil || mostVerbose() != LevelInfo {
		t.Errorf("the empty level is info: %v %q", err, mostVerbose())
	}
}

func TestBadLevelOrFormatIsRefusedAndChangesNothing(t *testing.T) {
	_ = ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{Level: LevelDebug})
	if ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{Level: "loud"}) == nil {
		t.Error("level loud accepted")
	}
	if ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{Format: "xml"}) == nil {
		t.Error("format xml accepted")
	}
	if mostVerbose() != LevelDebug {
		t.Errorf("a refused spec changed the level to %q", mostVerbose())
	}
}

func capture(t *testing.T, f func()) []map[string]any {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	f()
	os.Stderr = saved
	w.Close()
	buf := make([]byte, 1<<16)
	n, _ := r.Read(buf)
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func TestJSONLinesWithNamesValuesAndOnlyEnabledLevels(t *testing.T) {
	_ = ValidateAndSetLogLevelAndFormatGlobally(context.Background(), LogSpec{Level: LevelInfo, Format: FormatJSON})
	lines := capture(t, func() {
		l := New().WithName("handler").WithValues("pod", "p1")
		l.Info("mutated", "n", 1)
		l.Debug("hidden")
		l.Error("failed", errors.New("boom"))
		Logr().WithName("cr").Info("from controller-runtime")
		Logr().V(2).Info("hidden too")
	})
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got %v", lines)
	}
	if lines[0]["logger"] != "handler" || lines[0]["pod"] != "p1" || lines[0]["msg"] != "mutated" || lines[0]["level"] != "info" {
		t.Errorf("info line: %v", lines[0])
	}
	if lines[1]["msg"] != "failed" || lines[1]["error"] != "boom" {
		t.Errorf("error line: %v", lines[1])
	}
	if lines[2]["logger"] != "cr" {
		t.Errorf("logr line: %v", lines[2])
	}
}
