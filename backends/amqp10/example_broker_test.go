package amqp10_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestExample runs the code of Example against the broker of CARROT_TEST_AMQP10_URL, and
// checks what it prints as an Output comment would. Without a broker it skips, or fails
// with CARROT_TEST_REQUIRE_BROKERS=1, as testbroker.URL does.
func TestExample(t *testing.T) {
	url := testbroker.URL(t, testbroker.RabbitMQ4)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	queue := fmt.Sprintf("carrot-example.%d", time.Now().UnixNano())
	if err := roundTrip(ctx, &out, url, queue); err != nil {
		t.Fatalf("roundTrip: %v", err)
	}
	if got, want := out.String(), "received: hello over AMQP 1.0\n"; got != want {
		t.Errorf("Example printed %q, want %q", got, want)
	}
}
