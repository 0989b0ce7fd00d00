package amqp10_test

import (
	"testing"

	"github.com/carrot-go/carrot/backends/amqp10"
	"github.com/carrot-go/carrot/conformance"
)

// FuzzSecrets checks that no password, whatever its bytes, shows in an error or a log line
// of this backend's URL parsing; testdata/fuzz holds the passwords that once did.
func FuzzSecrets(f *testing.F) {
	conformance.FuzzSecrets(f, conformance.Secrets{
		Templates: []string{
			"amqp10://carrot:{password}@127.0.0.1:1/",
			"amqp10s://carrot:{password}@127.0.0.1:1/?container_id=fuzz",
		},
		Parse: func(rawURL string) error { _, err := amqp10.ParseURL(rawURL); return err },
	})
}
