package notify

import (
	"testing"

	"github.com/portwatchd/portwatchd/policy"
)

// BenchmarkSend measures Send to one webhook spool: encode, write, fsync the
// file and the directory. It bounds how fast the daemon can hand off a
// snapshot's events.
func BenchmarkSend(b *testing.B) {
	d, err := New(policy.Notify{Webhooks: []policy.Webhook{hook("bench", "generic", "http://127.0.0.1:1/")}, SpoolSize: 1 << 30},
		Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	events := batchOf(10, "bench")
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Send(events); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFormats measures building each payload for a 50-event batch.
func BenchmarkFormats(b *testing.B) {
	events := batchOf(50, "bench")
	for _, format := range Formats() {
		b.Run(format, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := formats[format].render(events, policy.Webhook{Name: "b", URL: "https://h.example/t"}, testTime); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
