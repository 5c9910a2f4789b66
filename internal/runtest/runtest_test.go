package runtest

import (
	"context"
	"errors"
	"testing"
)

func TestStart(t *testing.T) {
	errStopped := errors.New("stopped")
	t.Run("ready, then stopped by its context", func(t *testing.T) {
		runs := 0
		r := MustStart(t, "run", func(ctx context.Context, ready func(context.Context, string) error) error {
			runs++
			if err := ready(ctx, "127.0.0.1:1"); err != nil {
				return err
			}
			<-ctx.Done()
			return errStopped
		})
		if r.Ready != "127.0.0.1:1" {
			t.Errorf("Ready = %q", r.Ready)
		}
		if err := r.Stop(); err != errStopped {
			t.Errorf("Stop = %v, want what run returned", err)
		}
		if err := r.Stop(); err != errStopped || runs != 1 {
			t.Errorf("second Stop = %v after %d runs, want the same error", err, runs)
		}
	})
	t.Run("returns before it is ready", func(t *testing.T) {
		refused := errors.New("refused")
		r, err := Start(t, "run", func(context.Context, func(context.Context, int) error) error { return refused })
		if r != nil || err != refused {
			t.Errorf("Start = %v, %v; want run's error", r, err)
		}
	})
	t.Run("stopped when the test ends", func(t *testing.T) {
		ended := make(chan struct{})
		t.Run("inner", func(t *testing.T) {
			MustStart(t, "run", func(ctx context.Context, ready func(context.Context, int) error) error {
				ready(ctx, 1)
				<-ctx.Done()
				close(ended)
				return nil
			})
		})
		select {
		case <-ended:
		default:
			t.Error("the run still runs after its test ended")
		}
	})
}
