package amqp091_test

import (
	"testing"

	"github.com/carrot-go/carrot/backends/amqp091"
	"github.com/carrot-go/carrot/conformance"
)

// FuzzSecrets checks that no password, whatever its bytes, shows in an error or a log line
// of this backend's URL parsing; testdata/fuzz holds the passwords that once did.
func FuzzSecrets(f *testing.F) {
	conformance.FuzzSecrets(f, conformance.Secrets{
		Templates: []string{
			"amqp://carrot:{password}@127.0.0.1:1/",
			"amqps://carrot:{password}@127.0.0.1:1/vhost?connection_name=fuzz",
			"amqp://127.0.0.1:1/?password={password:query}",
		},
		Parse: func(rawURL string) error { _, err := amqp091.ParseURL(rawURL); return err },
	})
}
