// Package tlsconf builds the TLS configurations of Umbra's servers and clients, and
// decides when plaintext is allowed: only on loopback addresses, or when the operator
// says so explicitly.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
)

// Server is the TLS side of a listener.
type Server struct {
	CertFile string
	KeyFile  string
	// ClientCAFile, when set, verifies client certificates (mTLS). Services learn an
	// internal caller's name from its verified certificate.
	ClientCAFile string
	// RequireClientCert refuses clients without a certificate the CA signed.
	RequireClientCert bool
}

// Enabled reports whether a certificate is configured.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// Config returns the tls.Config for s (TLS 1.3 only).
func (s Server) Config() (*tls.Config, error) {
	if s.CertFile == "" || s.KeyFile == "" {
		return nil, fmt.Errorf("tls: both a certificate and a key file are needed")
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if s.ClientCAFile != "" {
		pool, err := loadPool(s.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if s.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if s.RequireClientCert {
		return nil, fmt.Errorf("tls: requiring client certificates needs a client CA file")
	}
	return cfg, nil
}

// Client is the TLS side of a connection to an Umbra server.
type Client struct {
	// CAFile verifies the server; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are this side's certificate for mTLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

// Enabled reports whether any TLS setting is given.
func (c Client) Enabled() bool { return c.CAFile != "" || c.CertFile != "" || c.ServerName != "" }

// Config returns the tls.Config for c.
func (c Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// IsLoopback reports whether addr ("host:port") names only the loopback interface.
// An empty host means every interface, which is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckPlaintext refuses plaintext on addr unless it is loopback or insecure is set.
// what names the endpoint in the message ("gRPC listener", "connection to card").
func CheckPlaintext(what, addr string, insecure bool) error {
	if insecure || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("refusing plaintext %s on %s: configure TLS, or pass --insecure to allow plaintext beyond loopback", what, addr)
}
