package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/testutil/debimage"
	"github.com/ckpt-dev/ckpt/internal/testutil/javaclass"
)

// The real-application images, assembled from Debian 12 packages by the
// test itself (downloaded once into /opt/ckpt/debimage, no registry).

const (
	imgBusybox = "localhost/busybox:deb12"
	imgRedis   = "localhost/redis:deb12"
	imgPython  = "localhost/python3:deb12"
	imgJVM     = "localhost/jvm:deb12"
	// The names the containerd and Podman fixtures recorded in config.dump.
	imgContainerdCounter = "localhost/busybox-counter:latest"
	imgPodmanCounter     = "localhost/counter-imported:latest"
)

// fixtureCounterScript is /bin/counter.sh of the containerd and Podman
// fixtures, byte for byte (CRIU checks the size of every file the dumped
// processes hold, and the shell holds this one).
const fixtureCounterScript = `#!/bin/sh
# re-open stdin inside the container so no host fd (e.g. host /dev/null) leaks into the dump
exec </dev/null
i=0
while true; do
  i=$((i+1))
  echo "$i" > /tmp/counter
  echo "$i" >> /tmp/counter.log
  echo "count $i"
  sleep 1
done
`

// writerScript appends a line with the next number to /data/log every 10 ms.
const writerScript = `#!/bin/sh
trap 'exit 0' TERM
i=0
while true; do
  i=$((i+1))
  echo "$i" >> /data/log
  usleep 10000
done
`

// httpCounterScript serves GET /inc (count one more) and GET /get, with
// HTTP/1.1 keep-alive, the count held in memory only.
const httpCounterScript = `import http.server, os, signal, sys, threading
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
count = 0
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global count
        with lock:
            if self.path == "/inc":
                count += 1
            body = ("%d\n" % count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("listening", flush=True)
srv.serve_forever()
`

// stateScript holds one kind of process state across two processes (a
// parent and the child it forks) and reports it every 100 ms:
//
//	count N
//	state N KIND=VALUE
//
// The parent sends N to the child through a pipe; the child answers
// through another. What it answers, or what the parent finds, is VALUE:
// see stateKinds in realapps_test.go.
const stateScript = `import ctypes, errno, fcntl, mmap, os, select, signal, struct, sys, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
kind = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/state", exist_ok=True)

class timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
class itimerspec(ctypes.Structure):
    _fields_ = [("interval", timespec), ("value", timespec)]

def check(r):
    if r == -1 or r == ctypes.c_void_p(-1).value:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r

parent_pre = lambda i: None
child_op = lambda i: str(i)
parent_post = None

if kind == "posixshm":
    fd = os.open("/dev/shm/ckpt-state", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 4096)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    parent_pre = lambda i: struct.pack_into("q", m, 0, i)
    child_op = lambda i: str(struct.unpack_from("q", m, 0)[0])
elif kind == "sysvshm":
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    shmid = check(libc.shmget(0, 4096, 0o1000 | 0o600))  # IPC_PRIVATE, IPC_CREAT
    cell = ctypes.c_int64.from_address(check(libc.shmat(shmid, None, 0)))
    def pre(i): cell.value = i
    parent_pre = pre
    child_op = lambda i: str(cell.value)
elif kind == "eventfd":
    efd = os.eventfd(0)
    parent_pre = lambda i: os.eventfd_write(efd, i)
    child_op = lambda i: str(os.eventfd_read(efd))
elif kind == "flock":
    held = open("/state/flock", "w")
    fcntl.flock(held, fcntl.LOCK_EX)
    posix = open("/state/posixlock", "w")
    fcntl.lockf(posix, fcntl.LOCK_EX)
    def try_lock(path, fn):
        with open(path, "w") as f:
            try:
                fn(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return "held"
                raise
            return "free"
    child_op = lambda i: try_lock("/state/flock", fcntl.flock) + "," + try_lock("/state/posixlock", fcntl.lockf)
elif kind == "timerfd":
    tfd = check(libc.timerfd_create(1, 0))  # CLOCK_MONOTONIC
    spec = itimerspec(timespec(0, 10000000), timespec(0, 10000000))
    check(libc.timerfd_settime(tfd, 0, ctypes.byref(spec), None))
    def post(i):
        if not select.select([tfd], [], [], 1.0)[0]:
            return "timeout"
        os.read(tfd, 8)
        cur = itimerspec()
        check(libc.timerfd_gettime(tfd, ctypes.byref(cur)))
        return str(cur.interval.sec * 1000000000 + cur.interval.nsec)
    parent_post = post
elif kind == "inotify":
    ifd = check(libc.inotify_init1(0o4000))  # IN_NONBLOCK
    check(libc.inotify_add_watch(ifd, b"/state", 2))  # IN_MODIFY
    def post(i):
        with open("/state/watched", "a") as f:
            f.write("%d\n" % i)
        if not select.select([ifd], [], [], 1.0)[0]:
            return "none"
        buf = os.read(ifd, 65536)
        off, seen = 0, "none"
        while off + 16 <= len(buf):
            wd, mask, cookie, n = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16:off + 16 + n].rstrip(b"\0")
            if mask & 2 and name == b"watched":
                seen = "modify"
            off += 16 + n
        return seen
    parent_post = post
elif kind == "nonroot":
    os.setgroups([])
    os.setgid(1000)
    os.setuid(1000)
elif kind != "pipe":
    sys.exit("unknown kind " + kind)

to_child_r, to_child_w = os.pipe()
to_parent_r, to_parent_w = os.pipe()
if os.fork() == 0:
    inp, out = os.fdopen(to_child_r), os.fdopen(to_parent_w, "w")
    for line in inp:
        out.write(child_op(int(line)) + "\n")
        out.flush()
    os._exit(0)
out, inp = os.fdopen(to_child_w, "w"), os.fdopen(to_parent_r)
i = 0
while True:
    i += 1
    parent_pre(i)
    out.write("%d\n" % i)
    out.flush()
    value = inp.readline().strip()
    if parent_post:
        value = parent_post(i)
    print("count %d" % i, flush=True)
    print("state %d %s=%s" % (i, kind, value), flush=True)
    time.sleep(0.1)
`

var busyboxApplets = []string{"sh", "ash", "cat", "echo", "sleep", "usleep", "ls", "mkdir", "tail", "wc", "ps", "true", "test", "["}

func busyboxSpec(name string, files ...debimage.File) debimage.Spec {
	links := map[string]string{}
	for _, a := range busyboxApplets {
		links["/bin/"+a] = "busybox"
	}
	return debimage.Spec{
		Name:       name,
		Packages:   []string{"busybox-static"},
		Dirs:       []debimage.Dir{{Path: "/data", Mode: 0o755}},
		Files:      files,
		Symlinks:   links,
		Entrypoint: []string{"/bin/sh"},
	}
}

// jvmExclude leaves out what only maintainer scripts, TLS trust stores or
// desktop features use: the JVM runs a heap counter and nothing else.
var jvmExclude = []string{"ca-certificates-java", "ca-certificates", "openssl", "java-common", "debconf", "cdebconf",
	"libcups2", "libasound2", "libasound2-data", "util-linux", "util-linux-extra", "adduser", "dpkg", "tar"}

func debImageSpecs() map[string]func() (debimage.Spec, error) {
	return map[string]func() (debimage.Spec, error){
		imgBusybox: func() (debimage.Spec, error) {
			return busyboxSpec(imgBusybox, debimage.File{Path: "/bin/writer.sh", Mode: 0o755, Data: []byte(writerScript)}), nil
		},
		imgContainerdCounter: func() (debimage.Spec, error) {
			s := busyboxSpec(imgContainerdCounter, debimage.File{Path: "/bin/counter.sh", Mode: 0o755, Data: []byte(fixtureCounterScript)})
			s.Entrypoint = []string{"/bin/counter.sh"}
			return s, nil
		},
		imgPodmanCounter: func() (debimage.Spec, error) {
			s := busyboxSpec(imgPodmanCounter, debimage.File{Path: "/bin/counter.sh", Mode: 0o755, Data: []byte(fixtureCounterScript)})
			s.Entrypoint = []string{"/bin/counter.sh"}
			return s, nil
		},
		imgRedis: func() (debimage.Spec, error) {
			return debimage.Spec{
				Name:     imgRedis,
				Packages: []string{"redis-server"},
				// maintainer scripts' tools; redis runs without them
				Exclude:    []string{"adduser", "init-system-helpers", "lsb-base", "sysvinit-utils", "debconf", "cdebconf", "dpkg", "tar", "perl-base"},
				Users:      []debimage.User{{Name: "redis", UID: 100, GID: 101, Home: "/var/lib/redis"}},
				Dirs:       []debimage.Dir{{Path: "/var/lib/redis", Mode: 0o750, UID: 100, GID: 101}},
				Entrypoint: []string{"/usr/bin/redis-server"},
			}, nil
		},
		imgPython: func() (debimage.Spec, error) {
			return debimage.Spec{
				Name:     imgPython,
				Packages: []string{"python3"},
				Exclude:  []string{"tzdata", "debconf", "cdebconf", "dpkg", "tar", "perl-base"},
				Users:    []debimage.User{{Name: "app", UID: 1000, GID: 1000, Home: "/home/app"}},
				Files: []debimage.File{
					{Path: "/srv/counter.py", Mode: 0o644, Data: []byte(httpCounterScript)},
					{Path: "/srv/state.py", Mode: 0o644, Data: []byte(stateScript)},
				},
				Dirs:       []debimage.Dir{{Path: "/state", Mode: 0o1777}},
				Entrypoint: []string{"/usr/bin/python3"},
			}, nil
		},
		imgJVM: func() (debimage.Spec, error) {
			class, err := javaclass.Counter("Counter", 100)
			if err != nil {
				return debimage.Spec{}, err
			}
			return debimage.Spec{
				Name:       imgJVM,
				Packages:   []string{"openjdk-17-jre-headless"},
				Exclude:    jvmExclude,
				Files:      []debimage.File{{Path: "/app/Counter.class", Mode: 0o644, Data: class}},
				Entrypoint: []string{jvmJava},
			}, nil
		},
	}
}

const jvmJava = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"

var (
	debImagesMu sync.Mutex
	debImages   = map[string]string{}
)

// debImage returns the archive of a real-application image, building it on
// first use (cached across runs). It skips the test only on a machine
// without Debian's package tools.
func debImage(t *testing.T, name string) string {
	t.Helper()
	needE2E(t)
	debImagesMu.Lock()
	defer debImagesMu.Unlock()
	if p, ok := debImages[name]; ok {
		return p
	}
	specs := debImageSpecs()
	mk, ok := specs[name]
	if !ok {
		t.Fatalf("no image spec %s", name)
	}
	spec, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	b := debimage.Builder{Logf: t.Logf}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	p, err := b.Build(ctx, spec)
	if errors.Is(err, debimage.ErrNoApt) {
		t.Skipf("cannot build images from Debian packages here: %v", err)
	}
	if err != nil {
		t.Fatalf("build image %s: %v", name, err)
	}
	t.Logf("image %s: %s (%v)", name, p, time.Since(start).Round(time.Millisecond))
	debImages[name] = p
	return p
}

// withImages imports more images before the agent starts.
func withImages(paths ...string) agentOption {
	return func(a *agent) { a.images = append(a.images, paths...) }
}
