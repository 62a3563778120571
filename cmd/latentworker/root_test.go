package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitFailure},
		{badInput{errors.New("worker.name: bad")}, exitBadInput},
		{fmt.Errorf("bake: %w", context.Canceled), exitInterrupted},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		if got := report(&buf, tt.err); got != tt.want {
			t.Errorf("report(%v) = %d; want %d", tt.err, got, tt.want)
		}
	}
}

func run(t *testing.T, env map[string]string, args ...string) error {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	return root.Execute()
}

func TestInitThenValidate(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "lw.toml")
	if err := run(t, nil, "init", "-c", cfg); err != nil {
		t.Fatalf("init: %v", err)
	}
	if err := run(t, nil, "init", "-c", cfg); !errors.Is(err, errBadInput) {
		t.Errorf("second init = %v; want a bad-input error (file exists)", err)
	}
	err := run(t, map[string]string{"LATENTWORKER_PASSWORD": ""}, "validate", "--offline", "-c", cfg)
	if !errors.Is(err, errBadInput) || !strings.Contains(err.Error(), "worker.name") {
		t.Errorf("validate of the starter = %v; want a bad-input error naming worker.name", err)
	}
	err = run(t, map[string]string{"LATENTWORKER_PASSWORD": "s3cret-pw"}, "validate", "--offline", "-c", cfg,
		"--worker-name", "w1", "--admin-name", "Jane Doe", "--admin-email", "jane@example.com")
	if err != nil {
		t.Fatalf("validate with the fields filled in: %v", err)
	}
	err = run(t, map[string]string{"LATENTWORKER_PASSWORD": "s3cret-pw"}, "validate", "--offline", "-c", cfg,
		"--worker-name", "w1;rm -rf /", "--admin-name", "Jane Doe", "--admin-email", "jane@example.com")
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("validate with a bad name = %v; want an error without the password", err)
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Fatal(err)
	}
}
