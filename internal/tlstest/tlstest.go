// Package tlstest makes certificates and TLS servers for tests.
package tlstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Cert returns a self-signed certificate (a CA of its own) for names, each a DNS name or an
// IP address, and the paths of PEM files that hold it and its key, removed when t ends.
func Cert(t testing.TB, names ...string) (cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "carrot test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

// A Handshake is what a [Server] saw of a client's TLS handshake.
type Handshake struct {
	ServerName string // the name the client asked for (SNI); "" when it sent none
	Err        error  // the handshake's error: a client that refused the certificate fails it
}

// Server is a TLS listener on 127.0.0.1 that completes each client's handshake and then
// closes the connection (it speaks no protocol above TLS), recording the handshakes.
type Server struct {
	Addr   string // 127.0.0.1:PORT
	CAFile string // the PEM file of its certificate, to trust it

	ln         net.Listener
	handshakes chan Handshake
	wg         sync.WaitGroup
}

// NewServer starts a Server whose certificate is for names, closed when t ends.
func NewServer(t testing.TB, names ...string) *Server {
	t.Helper()
	cert, certFile, _ := Cert(t, names...)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), CAFile: certFile, ln: ln, handshakes: make(chan Handshake, 100)}
	s.wg.Go(s.serve)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *Server) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer c.Close()
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(time.Minute))
			err := tc.HandshakeContext(context.Background())
			select {
			case s.handshakes <- Handshake{ServerName: tc.ConnectionState().ServerName, Err: err}:
			default: // nobody reads that many
			}
		})
	}
}

// Next returns the next handshake the server saw, waiting for one within ctx.
func (s *Server) Next(ctx context.Context) (Handshake, error) {
	select {
	case h := <-s.handshakes:
		return h, nil
	case <-ctx.Done():
		return Handshake{}, errors.New("tlstest: no TLS handshake: " + ctx.Err().Error())
	}
}
