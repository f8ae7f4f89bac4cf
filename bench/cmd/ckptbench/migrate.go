package main

// Migration rows: two embedded agents, each in a network namespace of its
// own that the harness creates (a veth pair with link-local addresses
// inside them, nothing else), over HTTPS with certificates of a throwaway
// CA. The counters tick every 10 ms; the downtime is the time from the
// source's last tick that the destination continues from to the
// destination's first tick (both logs are written on this machine, one
// clock).
//
//	mc  ckpt migrate (copy-first): checkpoint, stream the archive, restore
//	ml  ckpt migrate --live (post-copy): only the non-memory images move
//	    before the destination runs; the pages follow

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

const migrationTick = 10 * time.Millisecond

// migration is the two nodes of the migration rows.
type migration struct {
	nsA, nsB  string
	ipA, ipB  string
	caFile    string
	tokenFile string
	a, b      *agent
	// live is the live row's container: on which agent, and its pod.
	liveOn  *agent
	livePod string
}

func run1(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// startMigration creates the namespaces and starts one agent in each.
func (e *env) startMigration(ctx context.Context) (*migration, error) {
	var b [2]byte
	rand.Read(b[:])
	tag := fmt.Sprintf("%02x%02x", b[0], b[1])
	m := &migration{nsA: "ckptbench-" + tag + "-a", nsB: "ckptbench-" + tag + "-b",
		ipA: fmt.Sprintf("169.254.%d.1", 1+int(b[0])%250), ipB: fmt.Sprintf("169.254.%d.2", 1+int(b[0])%250)}
	e.mig = m
	vethA, vethB := "ckb"+tag+"a", "ckb"+tag+"b"
	steps := [][]string{
		{"netns", "add", m.nsA}, {"netns", "add", m.nsB},
		{"link", "add", vethA, "netns", m.nsA, "type", "veth", "peer", "name", vethB, "netns", m.nsB},
		{"-n", m.nsA, "addr", "add", m.ipA + "/30", "dev", vethA}, {"-n", m.nsB, "addr", "add", m.ipB + "/30", "dev", vethB},
		{"-n", m.nsA, "link", "set", vethA, "up"}, {"-n", m.nsB, "link", "set", vethB, "up"},
		{"-n", m.nsA, "link", "set", "lo", "up"}, {"-n", m.nsB, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run1("ip", s...); err != nil {
			return m, err
		}
	}
	dir := filepath.Join(e.o.work, "migration")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, err
	}
	certs, err := writeCerts(dir, m.ipA, m.ipB)
	if err != nil {
		return m, err
	}
	m.caFile = certs[0]
	m.tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(m.tokenFile, []byte(benchToken), 0o600); err != nil {
		return m, err
	}
	if m.a, err = startNetnsAgent(ctx, e.o.ckpt, filepath.Join(dir, "a"), m.nsA, m.ipA, certs[1], certs[2]); err != nil {
		return m, err
	}
	// Each trusts the other's archives: the live row moves back and forth.
	if m.b, err = startNetnsAgent(ctx, e.o.ckpt, filepath.Join(dir, "b"), m.nsB, m.ipB, certs[3], certs[4],
		"--restore-trusted-keys", filepath.Join(m.a.root, "pki", "checkpoint-signing.pub")); err != nil {
		return m, err
	}
	m.a.stop()
	if m.a, err = startNetnsAgent(ctx, e.o.ckpt, filepath.Join(dir, "a"), m.nsA, m.ipA, certs[1], certs[2],
		"--restore-trusted-keys", filepath.Join(m.b.root, "pki", "checkpoint-signing.pub")); err != nil {
		return m, err
	}
	for _, ag := range []*agent{m.a, m.b} {
		for _, img := range []string{"counter.tar", "pause.tar"} {
			if _, err := ag.ckpt(ctx, "image", "import", filepath.Join(e.o.images, img)); err != nil {
				return m, err
			}
		}
	}
	return m, nil
}

func (m *migration) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, ag := range []*agent{m.a, m.b} {
		if ag != nil {
			ag.ckpt(ctx, "rm", "--all")
			ag.stop()
		}
	}
	exec.Command("ip", "netns", "del", m.nsA).Run()
	exec.Command("ip", "netns", "del", m.nsB).Run()
}

// startNetnsAgent runs an embedded agent inside netns (nsenter: only the
// network namespace), serving HTTPS on addr; the harness itself talks to it
// on its local socket.
func startNetnsAgent(ctx context.Context, bin, dir, netns, addr, cert, key string, extra ...string) (*agent, error) {
	a := &agent{bin: bin, root: filepath.Join(dir, "root"), logPath: filepath.Join(dir, "agent.log"), manifests: filepath.Join(dir, "manifests")}
	if err := os.MkdirAll(a.manifests, 0o755); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(benchToken+",bench,1000,\"system:masters\"\n"), 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if a.api, err = client.New(client.Config{Socket: filepath.Join(a.root, "ckpt.sock")}); err != nil {
		return nil, err
	}
	args := append([]string{"--net=/run/netns/" + netns, "--", bin, "--root-dir", a.root, "serve", "--address", addr, "--port", strconv.Itoa(a.port),
		"--tls-cert-file", cert, "--tls-private-key-file", key, "--token-auth-file", tokens, "--hostname-override", benchNode,
		"--pod-manifest-path", a.manifests, "--file-check-frequency", "500ms"}, extra...)
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.cmd = exec.Command("nsenter", args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if a.api.Healthz(ctx) == nil {
			return a, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.stop()
	return nil, fmt.Errorf("ckpt serve in %s did not become healthy; see %s", netns, a.logPath)
}

func (a *agent) url(m *migration) string {
	ip := m.ipA
	if a == m.b {
		ip = m.ipB
	}
	return "https://" + net.JoinHostPort(ip, strconv.Itoa(a.port))
}

// migrate runs `ckpt migrate` in the first namespace (it reaches both).
func (m *migration) migrate(ctx context.Context, from, to *agent, ref, pod string, extra ...string) (string, error) {
	args := append([]string{"--net=/run/netns/" + m.nsA, "--", from.bin, "migrate", ref, "--from", from.url(m), "--to", to.url(m),
		"--token-file", m.tokenFile, "--cacert", m.caFile, "--pod", pod}, extra...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ckpt migrate %s: %v: %s", strings.Join(extra, " "), err, out)
	}
	return string(out), nil
}

// prepareMigration starts the sources of rows mc and ml at one size.
func (e *env) prepareMigration(ctx context.Context, mib int) (func(), error) {
	m := e.mig
	pods := []string{fmt.Sprintf("migc-%d", mib), fmt.Sprintf("migl-%d", mib)}
	for i, p := range pods {
		if (i == 0 && !e.o.rows["mc"]) || (i == 1 && !e.o.rows["ml"]) {
			continue
		}
		if _, err := m.a.addCounterPodEvery(ctx, p, mib, 0, migrationTick); err != nil {
			return func() {}, err
		}
	}
	m.liveOn, m.livePod = m.a, staticPod(pods[1])
	return func() {
		ctx := context.Background()
		for _, p := range pods {
			m.a.removePod(ctx, p)
		}
		m.a.ckpt(ctx, "rm", "--all")
		m.b.ckpt(ctx, "rm", "--all")
	}, nil
}

// rowMigrateCopy moves row mc's counter copy-first; the source keeps
// running, so the downtime is from the tick at the cut to the copy's next.
func (e *env) rowMigrateCopy(ctx context.Context, t target, run int) (sample, error) {
	m := e.mig
	pod := fmt.Sprintf("copied-%d-%d", t.mib, run)
	src := staticPod(fmt.Sprintf("migc-%d", t.mib))
	out, err := m.migrate(ctx, m.a, m.b, ns+"/"+src+"/counter", ns+"/"+pod)
	if err != nil {
		return sample{}, err
	}
	_, rest, _ := strings.Cut(out, "checkpointed on "+m.a.url(m)+": ")
	name, _, _ := strings.Cut(rest, "\n")
	archive := filepath.Join(m.a.root, "checkpoints", name)
	k, err := lastCountIn(archive)
	if err != nil {
		return sample{}, err
	}
	os.Remove(archive)
	srcLog, err := m.a.logOf(ctx, src)
	if err != nil {
		return sample{}, err
	}
	cut, err := tickTime(srcLog, k)
	if err != nil {
		return sample{}, err
	}
	dstLog, err := m.b.logOf(ctx, pod)
	if err != nil {
		return sample{}, err
	}
	first, err := waitTick(ctx, dstLog, k+1)
	if err != nil {
		return sample{}, err
	}
	m.b.ckpt(context.Background(), "rm", ns+"/"+pod+"/counter")
	return sample{Latency: first.Sub(cut)}, nil
}

// rowMigrateLive moves row ml's counter live, back and forth between the
// agents; the downtime is from the source's last tick to the copy's first.
func (e *env) rowMigrateLive(ctx context.Context, t target, run int) (sample, error) {
	m := e.mig
	from, to := m.liveOn, m.b
	if from == m.b {
		to = m.a
	}
	srcLog, err := from.logOf(ctx, m.livePod)
	if err != nil {
		return sample{}, err
	}
	pod := fmt.Sprintf("live-%d-%d", t.mib, run)
	from.resetPeakRSS()
	to.resetPeakRSS()
	start := time.Now()
	if _, err := m.migrate(ctx, from, to, ns+"/"+m.livePod+"/counter", ns+"/"+pod, "--live"); err != nil {
		return sample{}, err
	}
	total := time.Since(start)
	rss := max(from.peakRSS(), to.peakRSS())
	counts, err := countLines(srcLog)
	if err != nil || len(counts) == 0 {
		return sample{}, fmt.Errorf("source log %s: %v", srcLog, err)
	}
	last := counts[len(counts)-1]
	dstLog, err := to.logOf(ctx, pod)
	if err != nil {
		return sample{}, err
	}
	first, err := waitTick(ctx, dstLog, last.n+1)
	if err != nil {
		return sample{}, err
	}
	// The next run moves it back; the ended source goes.
	from.ckpt(context.Background(), "rm", ns+"/"+m.livePod+"/counter")
	m.liveOn, m.livePod = to, pod
	e.liveTotal = &sample{Latency: total, RSS: rss}
	return sample{Latency: first.Sub(last.t), RSS: rss}, nil
}

// rowLiveTotal reports row ml's time until every page had moved (migrate
// returns when the source has ended). RSS is the larger of the two agents'
// peaks during the migration.
func (e *env) rowLiveTotal(ctx context.Context, t target, run int) (sample, error) {
	if e.liveTotal == nil {
		return sample{}, errors.New("no live migration from row ml")
	}
	s := *e.liveTotal
	e.liveTotal = nil
	return s, nil
}

// logOf returns the container log of pod's counter on a.
func (a *agent) logOf(ctx context.Context, pod string) (string, error) {
	var path string
	err := waitFor(ctx, func() bool {
		out, _ := a.ckpt(ctx, "ps")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == pod && f[2] == "counter" {
				if m, _ := filepath.Glob(filepath.Join(a.root, "ckpt", "containers", f[3]+"*", "container.log")); len(m) == 1 {
					path = m[0]
					return true
				}
			}
		}
		return false
	})
	return path, err
}

type tick struct {
	n int
	t time.Time
}

// countLines reads the "count N" lines of a CRI log with their times.
func countLines(path string) ([]tick, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []tick
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ts, rest, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, ok := strings.CutPrefix(rest, "stdout F count ")
		if !ok {
			continue
		}
		n, err1 := strconv.Atoi(strings.TrimSpace(v))
		t, err2 := time.Parse(time.RFC3339Nano, ts)
		if err1 == nil && err2 == nil {
			out = append(out, tick{n, t})
		}
	}
	return out, sc.Err()
}

func tickTime(path string, n int) (time.Time, error) {
	ticks, err := countLines(path)
	if err != nil {
		return time.Time{}, err
	}
	for _, t := range ticks {
		if t.n == n {
			return t.t, nil
		}
	}
	return time.Time{}, fmt.Errorf("no tick %d in %s", n, path)
}

// waitTick waits for the first tick of a restored counter and checks that
// it is n (no gap, no repeat).
func waitTick(ctx context.Context, path string, n int) (time.Time, error) {
	var first tick
	err := waitFor(ctx, func() bool {
		ticks, _ := countLines(path)
		if len(ticks) > 0 {
			first = ticks[0]
			return true
		}
		return false
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: no tick: %w", path, err)
	}
	if first.n != n {
		return time.Time{}, fmt.Errorf("%s: the copy's first tick is %d, want %d", path, first.n, n)
	}
	return first.t, nil
}

// lastCountIn reads the last count in an archive's container.log.
func lastCountIn(archive string) (int, error) {
	out, err := exec.Command("tar", "xOf", archive, "container.log").Output()
	if err != nil {
		return 0, fmt.Errorf("container.log of %s: %w", archive, err)
	}
	k := -1
	for _, line := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(line, " stdout F count "); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				k = n
			}
		}
	}
	if k < 0 {
		return 0, errors.New("no count in the archive's log")
	}
	return k, nil
}

// writeCerts writes a CA and a serving certificate for each address; it
// returns the CA file, then cert and key of each.
func writeCerts(dir string, ips ...string) ([]string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ckptbench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	files := []string{filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(files[0], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return nil, err
	}
	for i, ip := range ips {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		t := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: ip},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP(ip)}}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, key)
		if err != nil {
			return nil, err
		}
		kd, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		cf, kf := filepath.Join(dir, fmt.Sprintf("node%d.crt", i)), filepath.Join(dir, fmt.Sprintf("node%d.key", i))
		if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
			return nil, err
		}
		files = append(files, cf, kf)
	}
	return files, nil
}
