package embedded

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"

	rt "github.com/ckpt-dev/ckpt/internal/runtime"
)

// A hostPort is forwarded in user space by the shim of the pod's pause
// container: it listens on the host and, for each connection (or UDP
// peer), dials the containerPort on 127.0.0.1 inside the pod's network
// namespace. No interface, address or route is created anywhere.

// portForward is one hostPort, rendered for the shim's command line as
// "tcp:HOSTIP:HOSTPORT:CONTAINERPORT".
type portForward struct {
	Proto         string // tcp or udp
	HostIP        string // "" listens on every address, as the kubelet's portmap does
	HostPort      int
	ContainerPort int
}

func (p portForward) String() string {
	return fmt.Sprintf("%s:%s:%d:%d", p.Proto, p.HostIP, p.HostPort, p.ContainerPort)
}

func (p portForward) hostAddr() string {
	return net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
}

func parsePortForward(s string) (portForward, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 4 {
		return portForward{}, fmt.Errorf("port forward %q: want proto:hostIP:hostPort:containerPort", s)
	}
	// The host IP may be IPv6 and hold colons itself.
	n := len(parts)
	hp, err1 := strconv.Atoi(parts[n-2])
	cp, err2 := strconv.Atoi(parts[n-1])
	p := portForward{Proto: parts[0], HostIP: strings.Join(parts[1:n-2], ":"), HostPort: hp, ContainerPort: cp}
	if err1 != nil || err2 != nil || (p.Proto != "tcp" && p.Proto != "udp") {
		return portForward{}, fmt.Errorf("port forward %q: want proto:hostIP:hostPort:containerPort", s)
	}
	return p, nil
}

// forwardSpecs lists the hostPorts of a pod's containers. With hostNetwork
// the container listens on the host itself: nothing to forward.
func forwardSpecs(ports []corev1.ContainerPort, hostNetwork bool) []string {
	if hostNetwork {
		return nil
	}
	var out []string
	for _, p := range ports {
		if p.HostPort == 0 {
			continue
		}
		out = append(out, portForward{
			Proto: strings.ToLower(string(protocolOf(p))), HostIP: p.HostIP,
			HostPort: int(p.HostPort), ContainerPort: int(p.ContainerPort),
		}.String())
	}
	return out
}

// forwarder serves a set of hostPorts into one network namespace.
type forwarder struct {
	ns      netns.NsHandle
	closers []io.Closer
}

// startForwarding binds every hostPort first, so that a taken port fails
// the pod before anything is served, then serves them in the background.
func startForwarding(pid int, specs []string) (*forwarder, error) {
	f := &forwarder{}
	if len(specs) == 0 {
		return f, nil
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("open the pod's network namespace: %w", err)
	}
	f.ns = ns
	var tcp []net.Listener
	var udp []*net.UDPConn
	var fwds []portForward
	for _, s := range specs {
		p, err := parsePortForward(s)
		if err != nil {
			f.Close()
			return nil, err
		}
		switch p.Proto {
		case "tcp":
			l, err := net.Listen("tcp", p.hostAddr())
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("hostPort %d/TCP on %q is not available: %w", p.HostPort, p.HostIP, err)
			}
			f.closers = append(f.closers, l)
			tcp = append(tcp, l)
		case "udp":
			a, err := net.ResolveUDPAddr("udp", p.hostAddr())
			if err != nil {
				f.Close()
				return nil, err
			}
			c, err := net.ListenUDP("udp", a)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("hostPort %d/UDP on %q is not available: %w", p.HostPort, p.HostIP, err)
			}
			f.closers = append(f.closers, c)
			udp = append(udp, c)
		}
		fwds = append(fwds, p)
	}
	ti, ui := 0, 0
	for _, p := range fwds {
		switch p.Proto {
		case "tcp":
			go f.serveTCP(tcp[ti], p.ContainerPort)
			ti++
		case "udp":
			go f.serveUDP(udp[ui], p.ContainerPort)
			ui++
		}
	}
	return f, nil
}

func (f *forwarder) Close() {
	for _, c := range f.closers {
		c.Close()
	}
	if f.ns.IsOpen() {
		f.ns.Close()
	}
}

// dialInside opens a socket in the pod's network namespace. The thread is
// locked while it is switched, and switched back before it is unlocked.
func (f *forwarder) dialInside(network string, port int) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(f.ns); err != nil {
		return nil, err
	}
	c, dialErr := net.DialTimeout(network, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err := netns.Set(orig); err != nil {
		// This thread is in the wrong namespace: let it die with the goroutine.
		if c != nil {
			c.Close()
		}
		runtime.Goexit()
	}
	return c, dialErr
}

func (f *forwarder) serveTCP(l net.Listener, port int) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			done := make(chan net.Conn, 1)
			go func() {
				var in net.Conn
				defer func() { done <- in }() // also when the thread is given up
				if c, err := f.dialInside("tcp", port); err == nil {
					in = c
				}
			}()
			in := <-done
			if in == nil {
				return
			}
			defer in.Close()
			proxy(c, in)
		}()
	}
}

// proxy copies both ways until both sides are done, passing half-closes on.
func proxy(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// udpIdle ends a UDP flow after this long without traffic.
const udpIdle = 60 * time.Second

func (f *forwarder) serveUDP(l *net.UDPConn, port int) {
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 64<<10)
	for {
		n, peer, err := l.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		key := peer.String()
		mu.Lock()
		in, ok := flows[key]
		mu.Unlock()
		if !ok {
			ch := make(chan net.Conn, 1)
			go func() {
				var in net.Conn
				defer func() { ch <- in }()
				if c, err := f.dialInside("udp", port); err == nil {
					in = c
				}
			}()
			if in = <-ch; in == nil {
				continue
			}
			mu.Lock()
			flows[key] = in
			mu.Unlock()
			go func(in net.Conn, peer *net.UDPAddr) {
				defer func() {
					mu.Lock()
					delete(flows, peer.String())
					mu.Unlock()
					in.Close()
				}()
				rb := make([]byte, 64<<10)
				for {
					in.SetReadDeadline(time.Now().Add(udpIdle))
					m, err := in.Read(rb)
					if err != nil {
						return
					}
					l.WriteToUDP(rb[:m], peer)
				}
			}(in, peer)
		}
		in.Write(buf[:n])
	}
}

// checkHostPorts refuses hostPorts that something on the host already
// holds, before the sandbox starts (the shim binds them for real).
func checkHostPorts(specs []string) error {
	for _, s := range specs {
		p, err := parsePortForward(s)
		if err != nil {
			return err
		}
		var c io.Closer
		switch p.Proto {
		case "tcp":
			c, err = net.Listen("tcp", p.hostAddr())
		case "udp":
			c, err = net.ListenPacket("udp", p.hostAddr())
		}
		if err != nil {
			return fmt.Errorf("hostPort %d/%s on %q is not available (%v): %w", p.HostPort, strings.ToUpper(p.Proto), p.HostIP, err, rt.ErrExists)
		}
		c.Close()
	}
	return nil
}
