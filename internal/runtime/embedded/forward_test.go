package embedded

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

func TestParsePortForward(t *testing.T) {
	cases := []struct {
		in   string
		want portForward
		err  bool
	}{
		{"tcp:127.0.0.1:8080:80", portForward{"tcp", "127.0.0.1", 8080, 80}, false},
		{"udp::53:5353", portForward{"udp", "", 53, 5353}, false},
		{"tcp:::1:8080:80", portForward{"tcp", "::1", 8080, 80}, false},
		{"sctp:127.0.0.1:1:2", portForward{}, true},
		{"tcp:127.0.0.1:x:80", portForward{}, true},
		{"tcp:80", portForward{}, true},
	}
	for _, c := range cases {
		got, err := parsePortForward(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("parsePortForward(%q) = %+v, %v; want %+v (error %v)", c.in, got, err, c.want, c.err)
		}
		if err == nil && got.String() != c.in {
			t.Errorf("%q renders as %q", c.in, got.String())
		}
	}
	specs := forwardSpecs([]corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1"}, {ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP}}, false)
	if strings.Join(specs, " ") != "tcp:127.0.0.1:8080:80 udp::5353:53" {
		t.Errorf("forwardSpecs = %v", specs)
	}
	if forwardSpecs([]corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}, true) != nil {
		t.Error("hostNetwork pods forward nothing")
	}
}

func freeLoopbackPort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The forwarder serves host ports into a network namespace; here the
// namespace is the test's own, so a loopback server stands in for the pod.
func TestForwarderTCPAndUDP(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("setns needs root")
	}
	// A TCP echo server and a UDP echo server "in the pod".
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo %s", line)
			}()
		}
	}()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, peer, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(append([]byte("echo "), buf[:n]...), peer)
		}
	}()
	hostTCP, hostUDP := freeLoopbackPort(t, "tcp"), freeLoopbackPort(t, "udp")
	f, err := startForwarding(os.Getpid(), []string{
		portForward{"tcp", "127.0.0.1", hostTCP, tl.Addr().(*net.TCPAddr).Port}.String(),
		portForward{"udp", "127.0.0.1", hostUDP, ul.LocalAddr().(*net.UDPAddr).Port}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hostTCP), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "hello\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || got != "echo hello\n" {
		t.Errorf("TCP through the forwarder: %q %v", got, err)
	}

	u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", hostUDP))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(3 * time.Second))
	u.Write([]byte("ping"))
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "echo ping" {
		t.Errorf("UDP through the forwarder: %q %v", buf[:n], err)
	}

	// A taken port is refused by name, before the sandbox starts.
	err = checkHostPorts([]string{portForward{"tcp", "127.0.0.1", hostTCP, 1}.String()})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("hostPort %d/TCP", hostTCP)) || !errors.Is(err, runtime.ErrExists) {
		t.Errorf("taken port: %v", err)
	}
	if _, err := startForwarding(os.Getpid(), []string{portForward{"tcp", "127.0.0.1", hostTCP, 1}.String()}); err == nil {
		t.Error("the shim bound a taken port")
	}
}
