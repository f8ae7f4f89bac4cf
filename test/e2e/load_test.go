package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/auth/authtest"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// loadDuration is how long the load runs: 15 s by default (CI),
// CKPT_LOAD_SECONDS to change it (hack/soak.sh: 60).
func loadDuration() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("CKPT_LOAD_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 15 * time.Second
}

const (
	loadClients    = 8
	numSlowClients = 40 // half trickle header bytes, half send nothing
	maxLoadCalls   = 200000
)

// class is one kind of request in the mix.
type class struct {
	name   string
	method string
	path   string
	token  string
	want   int
}

// TestLoadMixedClients: concurrent loopback clients send unauthenticated,
// forbidden and valid checkpoint requests while slowloris clients hold
// connections with unfinished headers. Every answer is the expected one,
// the slow clients are cut off by the server and do not delay the others,
// and after the load goroutines, file descriptors and memory (read from
// the agent's own /metrics) come back to where they were.
func TestLoadMixedClients(t *testing.T) {
	needE2E(t)
	hooks := authtest.StartWebhooks(t, func(user, verb, subresource string) bool { return user == "e2e-admin" })
	a := newAgent(t, withArgs("--authorization-mode", "Webhook", "--kubeconfig", hooks.Kubeconfig,
		"--authentication-token-webhook", "--checkpoint-retention-per-container", "3"))
	a.addPod("load", counterManifest("load", nil))
	a.waitRunning("load", "counter")
	if path, resp := a.checkpoint("default/load/counter", ""); path == "" { // warm up
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}

	viewer := authtest.Token("viewer")
	classes := []class{
		{"checkpoint", "POST", "/checkpoint/default/load/counter", testToken, 200},
		{"unauthenticated", "POST", "/checkpoint/default/load/counter", "", 401},
		{"unauthenticated", "GET", "/checkpoints", "", 401},
		{"bad-token", "GET", "/metrics", "not-a-token", 401},
		{"forbidden", "POST", "/checkpoint/default/load/counter", viewer, 403},
		{"forbidden", "GET", "/checkpoints", viewer, 403},
		{"forbidden", "DELETE", "/checkpoints/x.tar", viewer, 403},
		{"unauthenticated", "GET", "/healthz", "", 401},
		{"forbidden", "POST", "/restore/default/x/y?archive=x.tar", viewer, 403},
		{"list", "GET", "/checkpoints", testToken, 200},
	}

	before := a.scrape(t)

	// Two rounds of the same load. The first warms every pool (webhook
	// connections, buffers); after the second, goroutines, descriptors and
	// memory must be where the first left them: no leak grows per request.
	half := loadDuration() / 2
	r1 := runLoad(t, a, classes, half)
	warm := a.settle(t, nil)
	r2 := runLoad(t, a, classes, half)
	final := a.settle(t, warm)

	samples := append(r1.samples, r2.samples...)
	byClass := map[string][]time.Duration{}
	errs := map[string]int{}
	statuses := map[string]int{}
	for _, s := range samples {
		byClass[s.class] = append(byClass[s.class], s.d)
		statuses[fmt.Sprintf("%s=%d", s.class, s.status)]++
		if s.err != nil {
			errs[s.class]++
			if errs[s.class] <= 3 {
				t.Errorf("%s: %v", s.class, s.err)
			}
		}
	}
	var all []time.Duration
	for name, ds := range byClass {
		all = append(all, ds...)
		p50, p99 := percentiles(ds)
		t.Logf("FIGURE load %s: n=%d p50=%v p99=%v errors=%d", name, len(ds), p50, p99, errs[name])
	}
	p50, p99 := percentiles(all)
	t.Logf("FIGURE load all: duration=%v clients=%d+1 slowloris=%d per round n=%d rate=%.0f/s p50=%v p99=%v statuses=%v",
		loadDuration(), loadClients, numSlowClients, len(all), float64(len(all))/loadDuration().Seconds(), p50, p99, statuses)
	rss := append(r1.rss, r2.rss...)
	mib := func(v float64) float64 { return v / (1 << 20) }
	t.Logf("FIGURE load metrics: goroutines start %v, after round 1 %v, peak %v, after round 2 %v; open fds start %v, after round 1 %v, peak %v, after round 2 %v; rss MiB start %.1f, during %.1f-%.1f, after round 1 %.1f, after round 2 %.1f",
		before["go_goroutines"], warm["go_goroutines"], max(r1.peakG, r2.peakG), final["go_goroutines"],
		before["process_open_fds"], warm["process_open_fds"], max(r1.peakFD, r2.peakFD), final["process_open_fds"],
		mib(before["process_resident_memory_bytes"]), mib(slices.Min(rss)), mib(slices.Max(rss)),
		mib(warm["process_resident_memory_bytes"]), mib(final["process_resident_memory_bytes"]))
	if final["go_goroutines"] > warm["go_goroutines"]+goroutineSlack {
		t.Errorf("goroutines grew from %v to %v over a second round of load", warm["go_goroutines"], final["go_goroutines"])
	}
	if final["process_open_fds"] > warm["process_open_fds"]+fdSlack {
		t.Errorf("open file descriptors grew from %v to %v over a second round of load", warm["process_open_fds"], final["process_open_fds"])
	}
	// Flat memory: the second round holds no more than the first round's
	// peak plus 32 MiB (the counter's archives are under 1 MiB).
	if slices.Max(r2.rss) > slices.Max(r1.rss)+32<<20 {
		t.Errorf("memory grew under load: round 1 peak %.1f MiB, round 2 peak %.1f MiB", mib(slices.Max(r1.rss)), mib(slices.Max(r2.rss)))
	}
}

const (
	goroutineSlack = 3
	fdSlack        = 2
)

type sample struct {
	class  string
	status int
	d      time.Duration
	err    error
}

type round struct {
	samples       []sample
	rss           []float64
	peakG, peakFD float64
}

// runLoad runs one round: loadClients workers cycle through classes, one
// more takes valid checkpoints back to back (they queue on the
// container's lock), and numSlowClients slowloris connections are open
// meanwhile. It returns once the server has closed every slow connection.
func runLoad(t *testing.T, a *agent, classes []class, d time.Duration) round {
	t.Helper()
	slow := startSlowClients(t, a.port, numSlowClients)
	var mu sync.Mutex
	var r round
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// One client per credential, each keeping a connection per worker.
	clients := map[string]*client.Client{}
	for _, c := range classes {
		if clients[c.token] == nil {
			cl, err := client.New(client.Config{Server: a.url(""), Token: c.token, MaxIdleConnsPerHost: loadClients + 1})
			if err != nil {
				t.Fatal(err)
			}
			clients[c.token] = cl
		}
	}
	record := func(c class, status int, took time.Duration, err error) {
		if err == nil && status != c.want {
			err = fmt.Errorf("%s %s: %d, want %d", c.method, c.path, status, c.want)
		}
		mu.Lock()
		r.samples = append(r.samples, sample{c.name, status, took, err})
		mu.Unlock()
	}
	worker := func(pick func(i int) class) {
		defer wg.Done()
		for i := 0; i < maxLoadCalls; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := pick(i)
			start := time.Now()
			status, err := send(clients[c.token], c.method, c.path)
			record(c, status, time.Since(start), err)
		}
	}
	wg.Add(1)
	go worker(func(int) class { return classes[0] })
	for w := 0; w < loadClients; w++ {
		wg.Add(1)
		go worker(func(i int) class { return classes[1+(i+w)%(len(classes)-1)] })
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Second)
		m := a.scrape(t)
		r.rss = append(r.rss, m["process_resident_memory_bytes"])
		r.peakG, r.peakFD = max(r.peakG, m["go_goroutines"]), max(r.peakFD, m["process_open_fds"])
	}
	close(stop)
	wg.Wait()
	for _, cl := range clients {
		cl.CloseIdleConnections()
	}
	// The slow clients were cut off by the server, not by us, and did not
	// keep the others from being served meanwhile.
	for i, err := range slow.wait() {
		if err != nil {
			t.Errorf("slow client %d: %v", i, err)
		}
	}
	return r
}

// settle waits until goroutines and descriptors stop changing (or, with
// ref, come back to within the slack of ref) and returns the metrics.
func (a *agent) settle(t *testing.T, ref map[string]float64) map[string]float64 {
	t.Helper()
	prev := a.scrape(t)
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond)
		m := a.scrape(t)
		if ref != nil && m["go_goroutines"] <= ref["go_goroutines"]+goroutineSlack && m["process_open_fds"] <= ref["process_open_fds"]+fdSlack {
			return m
		}
		if ref == nil && m["go_goroutines"] == prev["go_goroutines"] && m["process_open_fds"] == prev["process_open_fds"] {
			return m
		}
		prev = m
	}
	return prev
}

func send(c *client.Client, method, path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := c.Raw(ctx, method, path, nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		return s[min(len(s)-1, int(q*float64(len(s))))].Round(10 * time.Microsecond)
	}
	return at(0.50), at(0.99)
}

// scrape reads the agent's /metrics and returns the unlabelled samples.
func (a *agent) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	// A fresh connection each time, closed at once, so that the scrape
	// itself holds no descriptor in the agent.
	c := a.api(testToken, nil)
	defer c.CloseIdleConnections()
	text, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	for _, want := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	return out
}

// slowClients are connections that never finish their request headers:
// half send a header byte every 500 ms, half send nothing after a partial
// request line.
type slowClients struct {
	wg   sync.WaitGroup
	errs []error
}

func startSlowClients(t *testing.T, port, n int) *slowClients {
	t.Helper()
	s := &slowClients{errs: make([]error, n)}
	for i := 0; i < n; i++ {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conn.Close()
			s.errs[i] = slowloris(conn, i%2 == 0)
		}()
	}
	return s
}

// slowloris holds conn open with an unfinished request until the server
// closes it; it gives up (an error) after two minutes.
func slowloris(conn net.Conn, trickle bool) error {
	giveUp := time.Now().Add(2 * time.Minute)
	if _, err := conn.Write([]byte("POST /checkpoint/default/load/counter HTTP/1.1\r\nHost: 127.0.0.1\r\n")); err != nil {
		return nil // already closed by the server
	}
	buf := make([]byte, 512)
	for time.Now().Before(giveUp) {
		if trickle {
			if _, err := conn.Write([]byte("X")); err != nil {
				return nil // the server hung up
			}
		}
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := conn.Read(buf)
		if n > 0 {
			return nil // the server answered (408/400) and will close
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			continue
		}
		return nil // EOF or reset: the server closed the connection
	}
	return fmt.Errorf("the server kept an unfinished request open for 2 minutes")
}

func (s *slowClients) wait() []error {
	s.wg.Wait()
	return s.errs
}
