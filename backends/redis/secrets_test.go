package redis_test

import (
	"testing"

	"github.com/carrot-go/carrot/backends/redis"
	"github.com/carrot-go/carrot/conformance"
)

// FuzzSecrets checks that no password, whatever its bytes, shows in an error or a log line
// of this backend's URL parsing; testdata/fuzz holds the passwords that once did.
func FuzzSecrets(f *testing.F) {
	conformance.FuzzSecrets(f, conformance.Secrets{
		Templates: []string{
			"redis://carrot:{password}@127.0.0.1:1/0",
			"redis://:{password}@127.0.0.1:1/",
			"redis://127.0.0.1:1/?sentinel=127.0.0.1:1&master=m&sentinel_password={password:query}",
		},
		Parse: func(rawURL string) error { _, err := redis.ParseURL(rawURL); return err },
	})
}
