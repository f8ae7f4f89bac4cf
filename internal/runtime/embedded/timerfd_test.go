package embedded

import (
	"os"
	"path/filepath"
	"testing"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"google.golang.org/protobuf/proto"
)

func timerfdEntry(id uint32, vsec, vnsec, isec, insec uint64) *crit.CriuEntry {
	z := proto.Uint32(0)
	t := &timerfd.TimerfdEntry{
		Id: proto.Uint32(id), Flags: z, Fown: &fown.FownEntry{Uid: z, Euid: z, Signum: z, PidType: z, Pid: z},
		Clockid: proto.Uint32(1), Ticks: proto.Uint64(1), SettimeFlags: z,
		Vsec: &vsec, Vnsec: &vnsec, Isec: &isec, Insec: &insec,
	}
	typ := fdinfo.FdTypes_TIMERFD
	return &crit.CriuEntry{Message: &fdinfo.FileEntry{Type: &typ, Id: proto.Uint32(id), Tfd: t}}
}

// A periodic timer dumped with no time left is restored armed for one
// interval; a disarmed one-shot timer and an armed periodic one are kept.
func TestRearmExpiredTimerfds(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, lib.CheckpointDirectory), 0o700)
	name := filepath.Join(dir, lib.CheckpointDirectory, "files.img")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	img := &crit.CriuImage{Magic: "FILES", Entries: []*crit.CriuEntry{
		timerfdEntry(1, 0, 0, 0, 10_000_000), // expired, periodic
		timerfdEntry(2, 0, 0, 0, 0),          // disarmed
		timerfdEntry(3, 0, 5_000, 2, 0),      // armed, periodic
	}}
	if err := crit.New(nil, f, "", false, false).Encode(img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	n, err := rearmExpiredTimerfds(root)
	if err != nil || n != 1 {
		t.Fatalf("rearmed %d, %v; want 1", n, err)
	}
	f, err = os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := crit.New(f, nil, "", false, false).Decode(&fdinfo.FileEntry{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32][2]uint64{1: {0, 10_000_000}, 2: {0, 0}, 3: {0, 5_000}}
	for _, e := range got.Entries {
		tfd := e.Message.(*fdinfo.FileEntry).GetTfd()
		if w := want[tfd.GetId()]; tfd.GetVsec() != w[0] || tfd.GetVnsec() != w[1] {
			t.Errorf("timer %d: it_value %d.%09d, want %d.%09d", tfd.GetId(), tfd.GetVsec(), tfd.GetVnsec(), w[0], w[1])
		}
	}
	if n, err := rearmExpiredTimerfds(root); err != nil || n != 0 {
		t.Errorf("second pass rearmed %d, %v", n, err)
	}
}
