package amqp091_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/amqp091"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestUserID checks that the URL's user is the only UserID carrot lets through.
func TestUserID(t *testing.T) {
	conn := open(t, "")
	if got := conn.Capabilities().UserID; got != "guest" {
		t.Errorf("Capabilities().UserID = %q, want guest", got)
	}
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(t.Context(), &carrot.Message{UserID: "mallory"}); !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("publish as mallory on guest's connection = %v, want ErrInvalid", err)
	}
}

// TestUserIDRefusedByBroker publishes, below carrot's check, as a backend whose user is
// unknown would, a message with another user's user-id: RabbitMQ closes the publishing
// channel, and the publish is an Invalid error, not retried; the next publish goes
// through on a new channel.
func TestUserIDRefusedByBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn := open(t, "")
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
	o, err := amqp091.ParseURL(testbroker.URL(t, testbroker.RabbitMQ))
	if err != nil {
		t.Fatal(err)
	}
	bc, err := amqp091.NewConnector(o).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	publish := func(user string) error {
		return bc.Publish(ctx, &backend.Publishing{Message: backend.Message{RoutingKey: q, Body: []byte(user), UserID: user}, Confirm: true})
	}
	err = publish("mallory")
	if code := bc.ErrorCode(err); code != backend.Invalid || !strings.Contains(err.Error(), "mallory") {
		t.Errorf("publish as mallory = %v (code %v), want an Invalid error naming the user", err, code)
	}
	if err := publish("guest"); err != nil {
		t.Errorf("publish as guest after the refusal: %v", err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body) != "guest" || m.UserID != "guest" {
		t.Errorf("received %q with UserID %q, want guest's message alone", m.Body, m.UserID)
	}
	m.Ack(ctx)
}
