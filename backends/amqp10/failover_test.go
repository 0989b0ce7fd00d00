package amqp10_test

import (
	"testing"

	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestFailover checks a URL of several hosts against RabbitMQ 4 over AMQP 1.0, each host a way to the
// test broker: the second host when the first refuses, and a recovery through the other
// node when the current one is lost, with every message arriving (see flowtest.Failover).
func TestFailover(t *testing.T) {
	flowtest.Failover(t, testbroker.URL(t, testbroker.RabbitMQ4))
}

// TestTLSServerNames checks that each host of an amqp10s:// URL is verified by its own
// name, unless server_name names one for all.
func TestTLSServerNames(t *testing.T) {
	flowtest.TLSServerNames(t, "amqp10s")
}
