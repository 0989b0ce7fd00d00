package memory_test

import (
	"testing"

	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
)

// FuzzSecrets checks that no password, whatever its bytes, shows in an error or a log line
// of this backend's URL parsing; testdata/fuzz holds the passwords that once did.
func FuzzSecrets(f *testing.F) {
	conformance.FuzzSecrets(f, conformance.Secrets{
		Templates: []string{
			"memory://carrot:{password}@fuzz",
			"memory://fuzz?password={password:query}",
		},
		Parse: func(rawURL string) error { _, err := memory.ParseURL(rawURL); return err },
	})
}
