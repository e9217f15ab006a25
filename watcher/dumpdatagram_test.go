package watcher

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// datagram frames msgs as the kernel sends the replies to request seq from
// port pid: each message with its header, padded to 4 bytes.
func datagram(t testing.TB, seq, pid uint32, msgs ...netlink.Message) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		m.Header.Length = 0
		m.Header.Sequence, m.Header.PID = seq, pid
		m.Header.Length = uint32(nlmsgHeaderLen + len(m.Data))
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func errnoData(e unix.Errno) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(-int32(e)))
}

// TestParseDumpDatagramRecorded checks that the datagram parser, which the
// watcher's dumps use, finds what parseSockDiag finds in the recorded dumps,
// over one datagram or one per message.
func TestParseDumpDatagramRecorded(t *testing.T) {
	done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)}
	for _, d := range sockDiagDumps {
		b, err := os.ReadFile(filepath.Join("testdata/sockdiag", d.name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		msgs := splitMessages(b)
		want, err := parseSockDiag(d.tcp, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) == 0 {
			t.Fatalf("%s: the recording holds no listener: the test tests nothing", d.name)
		}
		for _, split := range []bool{false, true} {
			var dgrams [][]byte
			if split {
				for _, m := range msgs {
					dgrams = append(dgrams, datagram(t, 7, 99, m))
				}
				dgrams = append(dgrams, datagram(t, 7, 99, done))
			} else {
				dgrams = [][]byte{datagram(t, 7, 99, append(msgs, done)...)}
			}
			var got []sockEntry
			n := 0
			for i, dg := range dgrams {
				var fin bool
				got, fin, err = parseDumpDatagram(d.tcp, 7, 99, dg, &n, got)
				if err != nil {
					t.Fatalf("%s, datagram %d: %v", d.name, i, err)
				}
				if fin != (i == len(dgrams)-1) {
					t.Fatalf("%s, datagram %d of %d: done %v", d.name, i, len(dgrams), fin)
				}
			}
			if diff := cmp.Diff(formatEntries(want), formatEntries(got)); diff != "" {
				t.Errorf("%s (split %v) (-want +got):\n%s", d.name, split, diff)
			}
		}
	}
}

func TestParseDumpDatagramErrors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata/sockdiag", "tcp4.bin"))
	if err != nil {
		t.Fatal(err)
	}
	msg := splitMessages(b)[0]
	done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)}
	good := datagram(t, 7, 99, msg)
	// An error message with 1 byte of errno (and padding).
	shortError := datagram(t, 7, 99, netlink.Message{Header: netlink.Header{Type: netlink.Error}, Data: []byte{1, 0, 0, 0}})
	binary.NativeEndian.PutUint32(shortError[0:4], nlmsgHeaderLen+1)
	for _, tt := range []struct {
		name    string
		b       []byte
		wantErr error // nil: no error, and done
		entries int
	}{
		{name: "done", b: datagram(t, 7, 99, msg, done), entries: 1},
		{name: "done without errno", b: datagram(t, 7, 99, netlink.Message{Header: netlink.Header{Type: netlink.Done}}), entries: 0},
		{name: "dump refused", b: datagram(t, 7, 99, netlink.Message{Header: netlink.Header{Type: netlink.Error}, Data: errnoData(unix.ENOENT)}), wantErr: unix.ENOENT},
		{name: "error at the end", b: datagram(t, 7, 99, msg, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: errnoData(unix.EINTR)}), wantErr: unix.EINTR},
		{name: "short error", b: shortError, wantErr: errShortMessage},
		{name: "other sequence", b: datagram(t, 8, 99, msg), wantErr: errMismatchedReply},
		{name: "other port", b: datagram(t, 7, 98, msg), wantErr: errMismatchedReply},
		{name: "cut", b: good[:len(good)-4], wantErr: errAny},
		{name: "cut header", b: append(datagram(t, 7, 99, msg), good[:10]...), wantErr: errShortMessage},
		{name: "short inet_diag_msg", b: datagram(t, 7, 99, netlink.Message{Header: netlink.Header{Type: sockDiagByFamily}, Data: make([]byte, 8)}), wantErr: errShortMessage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			got, done, err := parseDumpDatagram(true, 7, 99, tt.b, &n, nil)
			switch {
			case tt.wantErr == nil && (err != nil || !done || len(got) != tt.entries):
				t.Errorf("got %d entries, done %v, error %v; want %d entries, done, no error", len(got), done, err, tt.entries)
			case tt.wantErr == errAny && err == nil:
				t.Errorf("no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// errAny stands for any error in TestParseDumpDatagramErrors.
var errAny = errors.New("any error")

func FuzzParseDumpDatagram(f *testing.F) {
	for _, d := range sockDiagDumps {
		b, err := os.ReadFile(filepath.Join("testdata/sockdiag", d.name+".bin"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(datagram(f, 7, 99, splitMessages(b)...), d.tcp)
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		n := 0
		es, _, err := parseDumpDatagram(tcp, 7, 99, data, &n, nil)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.port == 0 || !e.addr.IsValid() || e.addr.Is4In6() {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

// TestParseDumpDatagramTypes checks the reply types taken: those of
// SOCK_DIAG_BY_FAMILY and of tcpDiagRequest (TCPDIAG_GETSOCK), which carry
// the same inet_diag_msg; any other type is not ours and is skipped.
func TestParseDumpDatagramTypes(t *testing.T) {
	b, err := os.ReadFile("testdata/sockdiag/tcp4.bin")
	if err != nil {
		t.Fatal(err)
	}
	msgs := splitMessages(b)
	want, err := parseSockDiag(true, msgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("the recording holds no listener: the test tests nothing")
	}
	done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)}
	for _, tc := range []struct {
		typ  netlink.HeaderType
		want []sockEntry
	}{
		{sockDiagByFamily, want},
		{tcpDiagGetSock, want},
		{19, nil}, // DCCPDIAG_GETSOCK
		{netlink.Overrun, nil},
	} {
		typed := make([]netlink.Message, len(msgs))
		for i, m := range msgs {
			typed[i] = m
			typed[i].Header.Type = tc.typ
		}
		n := 0
		got, fin, err := parseDumpDatagram(true, 7, 99, datagram(t, 7, 99, append(typed, done)...), &n, nil)
		if err != nil || !fin {
			t.Fatalf("type %d: done %v, %v", tc.typ, fin, err)
		}
		if diff := cmp.Diff(formatEntries(tc.want), formatEntries(got)); diff != "" {
			t.Errorf("type %d (-want +got):\n%s", tc.typ, diff)
		}
	}
}
