package lifetime

import (
	"errors"
	"sync"
	"testing"
)

func TestEnding(t *testing.T) {
	var e Ending
	done := e.Done()
	if e.Err() != nil {
		t.Fatalf("Err() before End = %v, want nil", e.Err())
	}
	select {
	case <-done:
		t.Fatal("Done closed before End")
	default:
	}
	first, second := errors.New("lost"), errors.New("closed")
	var wg sync.WaitGroup
	ended := make(chan bool, 2)
	for _, err := range []error{first, second} {
		wg.Go(func() { ended <- e.End(err) })
	}
	wg.Wait()
	if a, b := <-ended, <-ended; a == b {
		t.Errorf("End reported %v and %v, want exactly one true", a, b)
	}
	<-done
	if err := e.Err(); err != first && err != second {
		t.Errorf("Err() = %v, want the error of the End that won", err)
	}
	if e.End(errors.New("later")) || (e.Err() != first && e.Err() != second) {
		t.Error("a later End changed the ending")
	}
}
