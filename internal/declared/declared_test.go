package declared

import (
	"slices"
	"testing"

	"github.com/carrot-go/carrot/backend"
)

func TestTopology(t *testing.T) {
	var top Topology
	top.AddExchange(backend.Exchange{Name: "logs", Kind: backend.Topic})
	top.AddExchange(backend.Exchange{Name: "checked", Passive: true})
	top.AddQueue(backend.Queue{Name: "errors", AutoDelete: true})
	top.AddQueue(backend.Queue{Name: "other"})
	top.AddQueue(backend.Queue{Name: "checked", Passive: true})
	for _, b := range []backend.Binding{
		{Exchange: "logs", Queue: "errors", Key: "*.error"},
		{Exchange: "logs", Queue: "other", Key: "#"},
		{Exchange: "feed", Queue: "other", Key: "x"},
		{Exchange: "feed", Queue: "errors", Key: "y"},
	} {
		top.AddBinding(b)
	}
	if q, ok := top.Queue("errors"); !ok || !q.AutoDelete {
		t.Errorf("Queue(errors) = %+v, %v", q, ok)
	}
	if _, ok := top.Queue("checked"); ok {
		t.Error("a passive declaration was recorded")
	}

	top.DeleteExchange("logs")                                                     // its two bindings go with it
	top.DeleteQueue("errors")                                                      // and the binding of feed to errors
	top.DeleteBinding(backend.Binding{Exchange: "nope", Queue: "other", Key: "z"}) // not recorded: nothing happens
	exchanges, queues, bindings := top.Snapshot()
	if len(exchanges) != 0 {
		t.Errorf("exchanges %+v, want none", exchanges)
	}
	if len(queues) != 1 || queues[0].Name != "other" {
		t.Errorf("queues %+v, want other", queues)
	}
	if want := []backend.Binding{{Exchange: "feed", Queue: "other", Key: "x"}}; !slices.Equal(bindings, want) {
		t.Errorf("bindings %+v, want %+v", bindings, want)
	}
	top.DeleteBinding(bindings[0])
	if _, _, bindings := top.Snapshot(); len(bindings) != 0 {
		t.Errorf("bindings %+v after deleting the last, want none", bindings)
	}
}
