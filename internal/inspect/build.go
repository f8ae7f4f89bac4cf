package inspect

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	"github.com/checkpoint-restore/go-criu/v8/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	criufs "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// build decodes the extracted members into a Checkpoint.
func build(p *pass) (*Checkpoint, error) {
	c := &Checkpoint{Sizes: p.sizes, Processes: []*Process{}, Mounts: []Mount{}}
	d := p.dir
	var cfg lib.ContainerConfig
	if err := readJSON(d, "config.dump", &cfg); err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := readJSON(d, "spec.dump", &spec); err != nil {
		return nil, err
	}
	c.Container = container(&cfg, &spec, d)
	for _, m := range spec.Mounts {
		c.Mounts = append(c.Mounts, Mount{Destination: m.Destination, Type: m.Type, Source: m.Source})
	}
	if d.exists("stats-dump") {
		st, err := one(d, "stats-dump", "STATS", &stats.StatsEntry{})
		if err != nil {
			return nil, err
		}
		if dump := st.GetDump(); dump != nil {
			c.Statistics = &Statistics{
				FreezingTimeUS: dump.GetFreezingTime(), FrozenTimeUS: dump.GetFrozenTime(),
				MemdumpTimeUS: dump.GetMemdumpTime(), MemwriteTimeUS: dump.GetMemwriteTime(),
				PagesScanned: dump.GetPagesScanned(), PagesSkipped: dump.GetPagesSkippedParent(),
				PagesWritten: dump.GetPagesWritten(), PagesLazy: dump.GetPagesLazy(),
			}
		}
	}
	if !d.exists(checkpointDir + "/pstree.img") {
		return nil, fmt.Errorf("%w: no %s/pstree.img", ErrCorrupt, checkpointDir)
	}
	if p.layout == nil {
		l, err := loadLayout(d)
		if err != nil {
			return nil, err
		}
		p.layout = l
	}
	roots, err := processTree(d, p.layout)
	if err != nil {
		return nil, err
	}
	c.Processes = roots
	return c, nil
}

func readJSON(d *imageDir, name string, v any) error {
	f, err := d.root.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: no %s", ErrCorrupt, name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMetaBytes+1))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	return nil
}

// container names the container the way checkpointctl does: by the
// io.container.manager annotation of spec.dump.
func container(cfg *lib.ContainerConfig, spec *specs.Spec, d *imageDir) Container {
	a := spec.Annotations
	c := Container{
		Name: cfg.Name, ID: cfg.ID, Image: cfg.RootfsImageName, ImageRef: cfg.RootfsImageRef,
		Runtime: cfg.OCIRuntime, Restored: cfg.Restored, Annotations: a,
		Created: timePtr(cfg.CreatedTime), Checkpointed: timePtr(cfg.CheckpointedAt),
	}
	if c.Image == "" {
		c.Image = cfg.RootfsImage
	}
	switch a["io.container.manager"] {
	case "libpod":
		c.Engine = "Podman"
	case "cri-o":
		c.Engine = "CRI-O"
		var md struct {
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(a["io.kubernetes.cri-o.Metadata"]), &md) == nil && md.Name != "" {
			c.Name = md.Name
		}
		c.Pod, c.Namespace = a["io.kubernetes.pod.name"], a["io.kubernetes.pod.namespace"]
		if t, err := time.Parse(time.RFC3339Nano, a["io.kubernetes.cri-o.Created"]); err == nil && c.Created == nil {
			c.Created = &t
		}
	default:
		c.Engine = "containerd"
		if a["io.container.manager"] == "ckpt" {
			c.Engine = "ckpt"
		}
		if n := a["io.kubernetes.cri.container-name"]; n != "" {
			c.Name = n
		}
		c.Pod, c.Namespace = a["io.kubernetes.cri.sandbox-name"], a["io.kubernetes.cri.sandbox-namespace"]
	}
	return c
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// processTree builds the validated process tree from pstree.img.
func processTree(d *imageDir, l *layout) ([]*Process, error) {
	entries, err := all(d, checkpointDir+"/pstree.img", "PSTREE", &pstree.PstreeEntry{})
	if err != nil {
		return nil, err
	}
	files, err := fileTable(d)
	if err != nil {
		return nil, err
	}
	byPID := make(map[uint32]*Process, len(entries))
	var order []*Process
	for _, e := range entries {
		pid := e.GetPid()
		if pid == 0 || byPID[pid] != nil {
			return nil, fmt.Errorf("%w: pstree.img: pid %d is zero or listed twice", ErrCorrupt, pid)
		}
		p := &Process{PID: pid, PPID: e.GetPpid(), PGID: e.GetPgid(), SID: e.GetSid(), Threads: len(e.GetThreads())}
		if err := describe(d, l, files, p); err != nil {
			return nil, err
		}
		byPID[pid] = p
		order = append(order, p)
	}
	var roots []*Process
	for _, p := range order {
		if p.PPID == 0 {
			roots = append(roots, p)
			continue
		}
		parent := byPID[p.PPID]
		if parent == nil {
			return nil, fmt.Errorf("%w: pstree.img: parent %d of pid %d is missing", ErrCorrupt, p.PPID, p.PID)
		}
		parent.Children = append(parent.Children, p)
	}
	// A cycle leaves processes unreachable from the roots.
	reached := 0
	var count func([]*Process)
	count = func(ps []*Process) {
		sort.Slice(ps, func(i, j int) bool { return ps[i].PID < ps[j].PID })
		for _, p := range ps {
			reached++
			count(p.Children)
		}
	}
	count(roots)
	if reached != len(order) || len(roots) == 0 {
		return nil, fmt.Errorf("%w: pstree.img: the parent links form a cycle", ErrCorrupt)
	}
	return roots, nil
}

// describe fills in what the core, fd and memory images say of a process.
func describe(d *imageDir, l *layout, files map[uint32]*fdinfo.FileEntry, p *Process) error {
	core, err := one(d, fmt.Sprintf("%s/core-%d.img", checkpointDir, p.PID), "CORE", &criu_core.CoreEntry{})
	if err != nil {
		return err
	}
	state := crit.TaskState(core.GetTc().GetTaskState())
	p.Command, p.State = core.GetTc().GetComm(), state.String()
	if !state.IsAliveOrStopped() {
		return nil
	}
	if err := openFiles(d, files, p); err != nil {
		return err
	}
	m, err := decodeMM(d, p.PID)
	if err != nil {
		return err
	}
	mem := &Memory{Mappings: len(m.GetVmas())}
	for _, v := range m.GetVmas() {
		if v.GetEnd() > v.GetStart() {
			mem.Virtual += int64(v.GetEnd() - v.GetStart())
			if v.GetFlags()&unix.MAP_SHARED != 0 {
				mem.Shared += int64(v.GetEnd() - v.GetStart())
			}
		}
	}
	if pm := l.byPID[p.PID]; pm != nil {
		mem.Dumped = pm.present
	}
	p.Memory = mem
	return nil
}

// fileTable decodes files.img: every open file of the checkpoint by ID.
func fileTable(d *imageDir) (map[uint32]*fdinfo.FileEntry, error) {
	out := map[uint32]*fdinfo.FileEntry{}
	name := checkpointDir + "/files.img"
	if !d.exists(name) {
		return out, nil
	}
	entries, err := all(d, name, "FILES", &fdinfo.FileEntry{})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		out[e.GetId()] = e
	}
	return out, nil
}

// openFiles lists a process's descriptors, cwd and root, and its sockets.
func openFiles(d *imageDir, files map[uint32]*fdinfo.FileEntry, p *Process) error {
	ids, err := one(d, fmt.Sprintf("%s/ids-%d.img", checkpointDir, p.PID), "IDS", &criu_core.TaskKobjIdsEntry{})
	if err != nil {
		return err
	}
	fdName := fmt.Sprintf("%s/fdinfo-%d.img", checkpointDir, ids.GetFilesId())
	if d.exists(fdName) {
		fds, err := all(d, fdName, "FDINFO", &fdinfo.FdinfoEntry{})
		if err != nil {
			return err
		}
		for _, fd := range fds {
			f := files[fd.GetId()]
			p.Files = append(p.Files, File{
				FD: strconv.FormatUint(uint64(fd.GetFd()), 10), Type: fd.GetType().String(),
				Path: filePath(f, fd.GetId(), fd.GetType()),
			})
			if s, ok := socket(f, fd); ok {
				p.Sockets = append(p.Sockets, s)
			}
		}
	}
	fsName := fmt.Sprintf("%s/fs-%d.img", checkpointDir, p.PID)
	if d.exists(fsName) {
		fs, err := one(d, fsName, "FS", &criufs.FsEntry{})
		if err != nil {
			return err
		}
		p.Files = append(p.Files,
			File{FD: "cwd", Type: "REG", Path: filePath(files[fs.GetCwdId()], fs.GetCwdId(), fdinfo.FdTypes_REG)},
			File{FD: "root", Type: "REG", Path: filePath(files[fs.GetRootId()], fs.GetRootId(), fdinfo.FdTypes_REG)})
	}
	return nil
}

// filePath names a file the way crit and checkpointctl do.
func filePath(f *fdinfo.FileEntry, id uint32, t fdinfo.FdTypes) string {
	switch {
	case f == nil:
		return fmt.Sprintf("%s.%d", t, id)
	case f.GetReg() != nil:
		return f.GetReg().GetName()
	case f.GetPipe() != nil:
		return fmt.Sprintf("pipe[%d]", f.GetPipe().GetPipeId())
	case f.GetFifo() != nil:
		return fmt.Sprintf("fifo[%d]", f.GetFifo().GetPipeId())
	case f.GetUsk() != nil:
		u := f.GetUsk()
		return fmt.Sprintf("unix[%d (%d) %s]", u.GetIno(), u.GetPeer(), printable(u.GetName()))
	case f.GetIsk() != nil:
		i := f.GetIsk()
		return fmt.Sprintf("%s[%s:%d -> %s:%d]", protoName(i.GetProto()), ipString(i.GetSrcAddr()), i.GetSrcPort(), ipString(i.GetDstAddr()), i.GetDstPort())
	case f.GetMemfd() != nil:
		return fmt.Sprintf("memfd[%d]", f.GetMemfd().GetInodeId())
	}
	return fmt.Sprintf("%s.%d", t, id)
}

// socket describes an fd if it is a socket.
func socket(f *fdinfo.FileEntry, fd *fdinfo.FdinfoEntry) (Socket, bool) {
	s := Socket{FD: fd.GetFd(), Kind: fd.GetType().String()}
	switch fd.GetType() {
	case fdinfo.FdTypes_INETSK:
		if i := f.GetIsk(); i != nil {
			s.Family, s.Protocol, s.Type = familyName(i.GetFamily()), protoName(i.GetProto()), typeName(i.GetType())
			s.State = tcpState(i.GetState())
			s.Src, s.SrcPort = ipString(i.GetSrcAddr()), i.GetSrcPort()
			s.Dst, s.DstPort = ipString(i.GetDstAddr()), i.GetDstPort()
		}
	case fdinfo.FdTypes_UNIXSK:
		s.Family = "UNIX"
		if u := f.GetUsk(); u != nil {
			s.Type, s.State, s.Src = typeName(u.GetType()), tcpState(u.GetState()), printable(u.GetName())
		}
	case fdinfo.FdTypes_PACKETSK:
		s.Family = "PACKET"
		if k := f.GetPsk(); k != nil {
			s.Protocol = strconv.FormatUint(uint64(k.GetProtocol()), 10)
			s.Type = typeName(k.GetType())
		}
	case fdinfo.FdTypes_NETLINKSK:
		s.Family = "NETLINK"
		if n := f.GetNlsk(); n != nil {
			s.Protocol = strconv.FormatUint(uint64(n.GetProtocol()), 10)
			s.State = tcpState(n.GetState())
		}
	default:
		return Socket{}, false
	}
	return s, true
}

func familyName(v uint32) string {
	switch v {
	case unix.AF_INET:
		return "IPV4"
	case unix.AF_INET6:
		return "IPV6"
	case unix.AF_UNIX:
		return "UNIX"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func protoName(v uint32) string {
	switch v {
	case unix.IPPROTO_TCP:
		return "TCP"
	case unix.IPPROTO_UDP:
		return "UDP"
	case unix.IPPROTO_UDPLITE:
		return "UDPLITE"
	case unix.IPPROTO_ICMP:
		return "ICMP"
	case unix.IPPROTO_ICMPV6:
		return "ICMPV6"
	case unix.IPPROTO_RAW:
		return "RAW"
	case unix.IPPROTO_IP:
		return "IP"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func typeName(v uint32) string {
	switch v {
	case unix.SOCK_STREAM:
		return "STREAM"
	case unix.SOCK_DGRAM:
		return "DGRAM"
	case unix.SOCK_SEQPACKET:
		return "SEQPACKET"
	case unix.SOCK_RAW:
		return "RAW"
	}
	return strconv.FormatUint(uint64(v), 10)
}

var tcpStates = []string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}

func tcpState(v uint32) string {
	if v > 0 && int(v) < len(tcpStates) {
		return tcpStates[v]
	}
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(v), 10)
}

// ipString formats CRIU's address words (little-endian u32s).
func ipString(w []uint32) string {
	switch len(w) {
	case 1:
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], w[0])
		return netip.AddrFrom4(b).String()
	case 4:
		var b [16]byte
		for i, x := range w {
			binary.LittleEndian.PutUint32(b[i*4:], x)
		}
		return netip.AddrFrom16(b).String()
	}
	return ""
}

// printable replaces control bytes (abstract socket names start with NUL).
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '@'
		}
		out = append(out, r)
	}
	return string(out)
}
