package syncbuf

import (
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestConcurrent writes from several goroutines while reading; under -race
// it fails if Write or String is unguarded.
func TestConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if diff := cmp.Diff(strings.Repeat("x", 400), b.String()); diff != "" {
		t.Errorf("buffer mismatch (-want +got):\n%s", diff)
	}
}
