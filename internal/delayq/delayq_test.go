package delayq

import (
	"strings"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	for d, want := range map[time.Duration]int64{
		time.Microsecond:        1,
		99 * time.Millisecond:   99,
		100 * time.Millisecond:  100,
		101 * time.Millisecond:  110,
		1234 * time.Millisecond: 1300,
		30 * time.Second:        30000,
		30*time.Second + 1:      31000,
	} {
		if got := Bucket(d); got != want {
			t.Errorf("Bucket(%v) = %d, want %d", d, got, want)
		}
		if got := Bucket(d); time.Duration(got)*time.Millisecond < d || float64(got) > 1.1*float64(d.Milliseconds()+1) {
			t.Errorf("Bucket(%v) = %dms is not the delay rounded up by at most 10%%", d, got)
		}
	}
}

func TestName(t *testing.T) {
	if got := Name("", 500); got != "carrot.delay.500ms" {
		t.Errorf("Name of the default exchange = %q", got)
	}
	if got := Name("orders", 1300); got != "carrot.delay.1300ms.orders" {
		t.Errorf("Name = %q", got)
	}
	long := strings.Repeat("x", 250)
	if got := Name(long, 1300); len(got) > 255 || got == Name(long+"y", 1300) {
		t.Errorf("Name of a long exchange = %q (%d bytes), want a distinct name of at most 255", got, len(got))
	}
}
