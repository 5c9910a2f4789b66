package witness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// The witness's HTTP API (docs/key-transparency.md, "The witness's HTTP API"):
//
//	GET  /checkpoint[?size=N][&origin=O]  the cosigned checkpoint (latest, or of size N)
//	POST /checkpoint                      submit a checkpoint signed by the log; answered
//	                                      with the witness's cosigned one of that size
//	GET  /forks                           the fork evidence, as JSON
//	GET  /status                          the witness's and log's keys and the latest size
//
// Notes are text/plain; a fork is 409 Conflict with the witness's own cosigned
// checkpoint as the body (the other half of the evidence) and the reason in the
// Umbra-Fork-Reason header.

// ForkReasonHeader carries a fork's reason on a 409 answer.
const ForkReasonHeader = "Umbra-Fork-Reason"

// pollSpacing is the least time between two polls a client's GET for a size the
// witness has not reached yet may start.
const pollSpacing = 100 * time.Millisecond

// Handler serves the witness's HTTP API.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /checkpoint", w.getCheckpoint)
	mux.HandleFunc("POST /checkpoint", w.postCheckpoint)
	mux.HandleFunc("GET /forks", w.getForks)
	mux.HandleFunc("GET /status", w.getStatus)
	return mux
}

func writeNote(rw http.ResponseWriter, status int, b []byte) {
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(status)
	rw.Write(b)
}

func writeText(rw http.ResponseWriter, status int, format string, args ...any) {
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(status)
	fmt.Fprintf(rw, format+"\n", args...)
}

func (w *Witness) getCheckpoint(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if o := q.Get("origin"); o != "" && o != w.origin {
		writeText(rw, http.StatusNotFound, "this witness follows the log %s, not %s", w.origin, o)
		return
	}
	sizeArg := q.Get("size")
	if sizeArg == "" {
		latest := w.Latest()
		if latest == nil {
			writeText(rw, http.StatusNotFound, "this witness has cosigned no checkpoint yet")
			return
		}
		writeNote(rw, http.StatusOK, latest)
		return
	}
	size, err := strconv.ParseUint(sizeArg, 10, 64)
	if err != nil {
		writeText(rw, http.StatusBadRequest, "size %q is not a number", sizeArg)
		return
	}
	if b, ok := w.Cosigned(size); ok {
		writeNote(rw, http.StatusOK, b)
		return
	}
	// Not reached yet: look at the log now, at most every pollSpacing.
	w.mu.RLock()
	behind := w.latest == nil || size > w.latest.cp.Size
	recent := w.cfg.Now().Sub(w.lastPoll) < pollSpacing
	w.mu.RUnlock()
	if behind && !recent {
		if err := w.Poll(r.Context()); err != nil {
			w.logger.Debug("poll on request", zap.Error(err))
		}
		if b, ok := w.Cosigned(size); ok {
			writeNote(rw, http.StatusOK, b)
			return
		}
	}
	writeText(rw, http.StatusNotFound, "this witness has not cosigned a checkpoint of %d entries", size)
}

func (w *Witness) postCheckpoint(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, kt.MaxCheckpointSize+1))
	if err != nil {
		writeText(rw, http.StatusBadRequest, "reading the checkpoint: %v", err)
		return
	}
	if len(body) > kt.MaxCheckpointSize {
		writeText(rw, http.StatusRequestEntityTooLarge, "a checkpoint is at most %d bytes", kt.MaxCheckpointSize)
		return
	}
	out, err := w.Observe(r.Context(), body, "submitted")
	var fork *kt.ForkError
	switch {
	case err == nil:
		writeNote(rw, http.StatusOK, out)
	case errors.As(err, &fork):
		rw.Header().Set(ForkReasonHeader, fork.Error())
		writeNote(rw, http.StatusConflict, fork.Held)
	case errors.Is(err, kt.ErrMalformed):
		writeText(rw, http.StatusBadRequest, "%v", err)
	case errors.Is(err, kt.ErrBadSignature), errors.Is(err, kt.ErrUnknownLogKey):
		writeText(rw, http.StatusForbidden, "%v (this witness follows %s)", err, strings.Join(w.logKeys, ","))
	case errors.Is(err, ErrNotCosigned):
		writeText(rw, http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrLogUnavailable):
		writeText(rw, http.StatusBadGateway, "%v", err)
	default:
		w.logger.Error("observe a submitted checkpoint", zap.Error(err))
		writeText(rw, http.StatusInternalServerError, "internal error")
	}
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(rw)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (w *Witness) getForks(rw http.ResponseWriter, _ *http.Request) {
	forks := w.Forks()
	if forks == nil {
		forks = []Fork{}
	}
	writeJSON(rw, map[string]any{"forks": forks})
}

// Status is what GET /status answers.
type Status struct {
	Witness string `json:"witness"`
	Origin  string `json:"origin"`
	// LogKeys are the log keys the witness accepts checkpoints signed by (two during a
	// log key rotation); LogKey is the first of them.
	LogKey  string   `json:"log_key"`
	LogKeys []string `json:"log_keys"`
	// Size is the size of the last checkpoint cosigned; absent before the first.
	Size  *uint64 `json:"size,omitempty"`
	Forks int     `json:"forks"`
}

func (w *Witness) getStatus(rw http.ResponseWriter, _ *http.Request) {
	st := Status{Witness: w.Key().String(), Origin: w.origin, LogKey: w.logKeys[0], LogKeys: w.LogKeys()}
	w.mu.RLock()
	if w.latest != nil {
		size := w.latest.cp.Size
		st.Size = &size
	}
	st.Forks = len(w.forks)
	w.mu.RUnlock()
	writeJSON(rw, st)
}

// Serve serves the HTTP API on lis and follows the log, until ctx ends.
func (w *Witness) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{
		Handler:           w.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		w.Follow(ctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		stop()
		<-followed
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-followed
	return err
}
