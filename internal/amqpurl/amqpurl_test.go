package amqpurl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot/internal/brokerurl"
)

// pemFiles writes a self-signed certificate and its key, and returns their paths.
func pemFiles(t *testing.T) (cert, key string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "carrot test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestTLSOptions(t *testing.T) {
	cert, key := pemFiles(t)
	for _, tc := range []struct {
		query, serverName string
	}{
		{"", "rabbit"},
		{"?server_name=other&certfile=" + cert + "&keyfile=" + key + "&cacertfile=" + cert + "&x=1", "other"},
	} {
		u, err := Parse("amqps://rabbit"+tc.query, "test", "amqp", "amqps")
		if err != nil {
			t.Fatal(err)
		}
		var others []string
		x := brokerurl.Option{Name: "x", Set: func(v string) error { others = append(others, "x="+v); return nil }}
		if err := u.Read(x); err != nil {
			t.Fatalf("%q: %v", tc.query, err)
		}
		if u.Addr != "rabbit:5671" || u.TLS == nil || u.TLS.ServerName != tc.serverName {
			t.Errorf("%q: address %q, TLS %+v; want rabbit:5671 verifying %q", tc.query, u.Addr, u.TLS, tc.serverName)
		}
		if tc.query == "" {
			continue
		}
		if len(u.TLS.Certificates) != 1 || u.TLS.RootCAs == nil {
			t.Errorf("%q: %d client certificates, root CAs %v; want the files'", tc.query, len(u.TLS.Certificates), u.TLS.RootCAs)
		}
		if len(others) != 1 || others[0] != "x=1" {
			t.Errorf("%q: the backend was given %q, want only x=1", tc.query, others)
		}
	}
}

func TestTLSOptionsNeedTheScheme(t *testing.T) {
	u, err := Parse("amqp://rabbit/?server_name=other", "test", "amqp", "amqps")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Read(); err == nil || !strings.Contains(err.Error(), "need the amqps scheme") {
		t.Errorf("server_name on amqp: %v, want an error saying it needs amqps", err)
	}
}
