package ktlog

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestDialRefusesPlaintextBeyondLoopback: as every Umbra client, unless told.
func TestDialRefusesPlaintextBeyondLoopback(t *testing.T) {
	for _, addr := range []string{"kt.example.com:9090", "http://kt.example.com:8080"} {
		if _, err := Dial(Config{Addr: addr}); err == nil || !strings.Contains(err.Error(), "plaintext") {
			t.Errorf("Dial(%q) = %v; want a refusal of plaintext", addr, err)
		}
		l, err := Dial(Config{Addr: addr, Insecure: true})
		if err != nil {
			t.Errorf("Dial(%q) with Insecure: %v", addr, err)
			continue
		}
		l.Close()
	}
	if _, err := Dial(Config{Addr: "http://"}); err == nil {
		t.Error("Dial of a URL without a host succeeded")
	}
}

// TestGatewayErrorsAreSaid: an error answer of the gateway comes back with its
// message.
func TestGatewayErrorsAreSaid(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusBadRequest)
		rw.Write([]byte(`{"code": 11, "message": "to_size 9 is past the log"}`))
	})}
	go srv.Serve(lis)
	defer srv.Close()
	l, err := Dial(Config{Addr: "http://" + lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Consistency(context.Background(), 1, 9); err == nil || !strings.Contains(err.Error(), "to_size 9 is past the log") || !strings.Contains(err.Error(), "400") {
		t.Fatalf("Consistency = %v", err)
	}
}
