package procnet

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	const udpHeader = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
	tests := []struct {
		name string
		file string
		data string
		want Counts
	}{
		{
			name: "tcp listen and established",
			file: "tcp",
			data: tcpHeader +
				"   0: 00000000:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22071 1 0000000000000000 100 0 0 10 0\n" +
				"   1: 0101007F:2328 0101007F:8A3E 01 00000000:00000000 00:00000000 00000000     0        0 22100 1 0000000000000000 20 4 30 10 -1\n" +
				"   2: 0101007F:8A3E 0101007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 22101 1 0000000000000000 20 4 30 10 -1\n" +
				"   3: 0100007F:1F90 0100007F:C350 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0000000000000000\n",
			want: Counts{Listeners: map[string]int{"tcp": 1}, Established: 2},
		},
		{
			name: "udp6 unconnected counts, connected does not",
			file: "udp6",
			data: udpHeader +
				"  100: 00000000000000000000000000000000:2713 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 22074 2 0000000000000000 0\n" +
				"  101: 00000000000000000000000001000000:A0F1 00000000000000000000000001000000:0035 01 00000000:00000000 00:00000000 00000000     0        0 22075 2 0000000000000000 0\n",
			want: Counts{Listeners: map[string]int{"udp6": 1}},
		},
		{
			name: "header only",
			file: "tcp6",
			data: tcpHeader,
			want: Counts{Listeners: map[string]int{}},
		},
		{
			name: "empty",
			file: "udp",
			want: Counts{Listeners: map[string]int{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Counts{Listeners: map[string]int{}}
			Parse(tt.file, []byte(tt.data), &got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}
