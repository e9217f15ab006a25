package watcher

import (
	"cmp"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestRoundRobin(t *testing.T) {
	m := map[int]bool{5: true, 1: true, 3: true}
	take := func(q *roundRobin[int, bool], n int) []int {
		var got []int
		for range n {
			k, ok := q.next(m)
			if !ok {
				break
			}
			got = append(got, k)
		}
		return got
	}

	// A round hands out every key once, in order when one is set, then
	// the next round begins with the keys of then.
	q := &roundRobin[int, bool]{order: cmp.Compare[int]}
	if diff := gocmp.Diff([]int{1, 3}, take(q, 2)); diff != "" {
		t.Errorf("first keys (-want +got):\n%s", diff)
	}
	delete(m, 5)
	m[2] = true
	// 5 was in the round when it began: handed out, for the caller to skip.
	if diff := gocmp.Diff([]int{5, 1, 2, 3}, take(q, 4)); diff != "" {
		t.Errorf("rest of the round and the next (-want +got):\n%s", diff)
	}

	// Without an order, each round still hands out every key once.
	u := &roundRobin[int, bool]{}
	seen := map[int]int{}
	for _, k := range take(u, 3) {
		seen[k]++
	}
	if diff := gocmp.Diff(map[int]int{1: 1, 2: 1, 3: 1}, seen); diff != "" {
		t.Errorf("unordered round (-want +got):\n%s", diff)
	}

	var empty roundRobin[int, bool]
	if _, ok := empty.next(map[int]bool{}); ok {
		t.Error("a key from an empty map")
	}
}
