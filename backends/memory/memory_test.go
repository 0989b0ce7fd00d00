package memory_test

import (
	"context"
	"testing"

	"github.com/carrot-go/carrot"
	_ "github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
)

func TestConformance(t *testing.T) {
	url := "memory://" + t.Name() // one broker, shared by the suite's connections
	conformance.Run(t, conformance.Harness{
		Open: func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
	})
}
