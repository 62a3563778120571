package bake

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUnwindOrderAndFailures(t *testing.T) {
	var s undoStack
	var order []string
	add := func(kind Kind, id string, err error) {
		s.push(kind, "res", id, "rm "+id, func(ctx context.Context) error {
			if ctx.Err() != nil {
				t.Errorf("undo of %s ran on a cancelled context", id)
			}
			order = append(order, id)
			return err
		})
	}
	boom := errors.New("boom")
	add(KindTemp, "key-1", nil)
	add(KindTemp, "sg-1", boom)
	add(KindBuilder, "i-1", nil)
	add(KindImage, "ami-1", boom)
	add(KindTemp, "i-2", nil)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // unwind must not care
	left, err := s.unwind(ctx, time.Minute, func(k Kind) bool { return k == KindBuilder })
	if got, want := strings.Join(order, ","), "i-2,ami-1,sg-1,key-1"; got != want {
		t.Errorf("undo order = %s; want %s", got, want)
	}
	var le *LeftoverError
	if !errors.As(err, &le) || len(le.Leftovers) != 2 {
		t.Fatalf("unwind error = %v; want a *LeftoverError with 2 leftovers", err)
	}
	if !errors.Is(err, boom) {
		t.Errorf("unwind error does not wrap the undo error")
	}
	for _, want := range []string{"ami-1", "rm ami-1", "sg-1", "rm sg-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("unwind error %q does not name %q", err, want)
		}
	}
	if len(left) != 3 || !left[2].Kept || left[2].ID != "i-1" {
		t.Errorf("leftovers = %v; want ami-1, sg-1 failed then i-1 kept", left)
	}

	// A second unwind retries only what is left and never repeats an undo.
	order = nil
	_, _ = s.unwind(context.Background(), time.Minute, nil)
	if got, want := strings.Join(order, ","), "ami-1,i-1,sg-1"; got != want {
		t.Errorf("second unwind order = %s; want %s", got, want)
	}
}

func TestUnwindBounded(t *testing.T) {
	var s undoStack
	s.push(KindTemp, "instance", "i-slow", "aws ec2 terminate-instances --instance-ids i-slow", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	s.push(KindTemp, "key pair", "key-ok", "x", func(context.Context) error { return nil })
	start := time.Now()
	left, err := s.unwind(context.Background(), 50*time.Millisecond, nil)
	if time.Since(start) > 5*time.Second {
		t.Errorf("unwind took %s; want it bounded by its timeout", time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) || len(left) != 1 || left[0].ID != "i-slow" {
		t.Errorf("unwind = %v, %v; want i-slow left with a deadline error", left, err)
	}
}

func TestRunNow(t *testing.T) {
	var s undoStack
	n := 0
	it := s.push(KindTemp, "instance", "i-v", "x", func(context.Context) error { n++; return nil })
	if err := s.runNow(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	if _, err := s.unwind(context.Background(), time.Second, nil); err != nil || n != 1 {
		t.Errorf("after runNow, unwind = %v and undo ran %d times; want nil, 1", err, n)
	}
}
