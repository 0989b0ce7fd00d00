package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestBrokerNotesSeveralHosts: with a URL of several hosts, the policies are read from the
// management API of the first host whose API answers.
func TestBrokerNotesSeveralHosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:15672")
	if err != nil {
		t.Skipf("the management API's port on 127.0.0.1 is taken, by RabbitMQ perhaps: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, _ := r.BasicAuth(); u != "user" || p != "pw" {
			http.Error(w, "login", http.StatusUnauthorized)
			return
		}
		switch r.URL.EscapedPath() {
		case "/api/policies/v":
			w.Write([]byte(`[{"name":"cap","pattern":".*","apply-to":"queues","definition":{"max-length":1}}]`))
		default:
			w.Write([]byte(`[]`))
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	// Nothing listens on 127.0.0.2 (loopback, but not the server's address).
	n := readBrokerNotes(t.Context(), "amqp://user:pw@127.0.0.2:5672,127.0.0.1:5672/v", "")
	if n == nil || n.Source != "http://127.0.0.1:15672/" || n.Error != "" || len(n.Policies) != 1 || n.Policies[0].Name != "cap" {
		t.Errorf("notes %+v, want policy cap from http://127.0.0.1:15672/", n)
	}
}
