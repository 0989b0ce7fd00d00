// Package tlsfiles loads the certificate files that backends' URLs name into a TLS
// configuration.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Load adds to cfg the client certificate in certFile and keyFile, and the CAs in the PEM
// file caFile, which replace the system's; empty names are skipped. The errors name the
// URL options certfile, keyfile and cacertfile.
func Load(cfg *tls.Config, certFile, keyFile, caFile string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("URL options certfile and keyfile go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("URL options certfile and keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("URL option cacertfile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("URL option cacertfile=%q holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return nil
}
