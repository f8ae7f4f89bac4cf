package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseFreezePhases(t *testing.T) {
	// The shape of CRIU 4.2's dump.log at -v4, with round numbers.
	log := `(00.000000) CRIU run id = x
(00.040000) Running pre-dump scripts
(00.040001) 	[/w/post-dump.sh]
(00.050000) freezing cgroup /sys/fs/cgroup/freezer/ckpt/id: 100 x 100ms attempts, timeout: 10s
(00.150000) freezer.state=FROZEN
(00.151000) Running network-lock scripts
(00.151001) 	[/w/post-dump.sh]
(00.161001) Wait for ack 66 on daemon socket
pie: 1: __fetched msg: 66 66 0
(00.171001) Fetched ack: 66 66 0
(00.200000) page-xfer: Transferring pages:
(00.200001) page-xfer: 	p 0x400000 - 0x401000
(00.700001) PPB: 256 pages 1 segs 1048576 pipe 0 off
(00.800000) Running post-dump scripts
(00.800001) 	[/w/post-dump.sh]
(00.850001) Running network-unlock scripts
(00.850002) 	[/w/post-dump.sh]
(00.900002) Unfreezing tasks into 1
(00.950000) Dumping finished successfully
`
	got, err := parseFreezePhases(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	want := freezePhases{Frozen: ms(850.002), Pages: ms(500.001), Acks: ms(10), Scripts: ms(10 + 50 + 50)}
	near := func(a, b time.Duration) bool { d := a - b; return d < time.Microsecond && d > -time.Microsecond }
	if !near(got.Frozen, want.Frozen) || !near(got.Pages, want.Pages) || !near(got.Acks, want.Acks) || !near(got.Scripts, want.Scripts) {
		t.Errorf("phases %+v, want %+v", got, want)
	}
}
