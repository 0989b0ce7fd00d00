package carrot_test

import (
	"context"
	"errors"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
)

// hiddenInspector is a backend connection that does not pass on the Inspector of the
// one it wraps, as a wrapper written before InspectQueue existed, while its capabilities
// still claim it.
type hiddenInspector struct{ backend.Conn }

// fibbingInspector reports only ready messages, and returns counts it does not report.
type fibbingInspector struct{ backend.Conn }

func (f fibbingInspector) Capabilities() backend.Capabilities {
	caps := f.Conn.Capabilities()
	caps.InspectQueue = backend.ReadyCount
	return caps
}

func (f fibbingInspector) InspectQueue(ctx context.Context, name string) (backend.QueueStats, error) {
	st, err := f.Conn.(backend.Inspector).InspectQueue(ctx, name)
	st.Unacked = 0 // not reported: must come out as -1
	return st, err
}

func TestInspectQueue(t *testing.T) {
	ctx := t.Context()
	conn := open(t)
	if got := conn.Capabilities().InspectQueue; got != carrot.AllCounts {
		t.Errorf("memory's InspectQueue capability = %v, want %v", got, carrot.AllCounts)
	}
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if st, err := conn.InspectQueue(ctx, "q"); err != nil || st != (carrot.QueueStats{Ready: 1}) {
		t.Errorf("InspectQueue = %+v, %v; want 1 ready, 0 unacked, 0 consumers", st, err)
	}
	for name, want := range map[string]error{"": carrot.ErrInvalid, "missing": carrot.ErrNotFound} {
		if _, err := conn.InspectQueue(ctx, name); !errors.Is(err, want) {
			t.Errorf("InspectQueue(%q) = %v, want %v", name, err, want)
		}
	}

	hidden := wrapped(t, func(b backend.Conn) backend.Conn { return hiddenInspector{b} })
	if got := hidden.Capabilities().InspectQueue; got != 0 {
		t.Errorf("a backend that is no Inspector has the InspectQueue capability %v, want none", got)
	}
	if _, err := hidden.InspectQueue(ctx, "q"); !errors.Is(err, carrot.ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("InspectQueue on a backend that is no Inspector = %v, want ErrUnsupported", err)
	}

	fib := wrapped(t, func(b backend.Conn) backend.Conn { return fibbingInspector{b} })
	if _, err := fib.DeclareQueue(ctx, carrot.Queue{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	if st, err := fib.InspectQueue(ctx, "q"); err != nil || st != (carrot.QueueStats{Ready: 0, Unacked: -1, Consumers: -1}) {
		t.Errorf("InspectQueue on a backend that reports only ready messages = %+v, %v; want 0 ready, the others -1", st, err)
	}
}

func TestQueueCountsString(t *testing.T) {
	for c, want := range map[carrot.QueueCounts]string{
		0:                                        "none",
		carrot.AllCounts:                         "ready, unacked, consumers",
		carrot.ReadyCount | carrot.ConsumerCount: "ready, consumers",
	} {
		if got := c.String(); got != want {
			t.Errorf("QueueCounts(%d).String() = %q, want %q", c, got, want)
		}
	}
}
