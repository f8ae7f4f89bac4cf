package server

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

func FuzzParseRef(f *testing.F) {
	f.Add("default", "web", "app")
	f.Add("kube-system", "etcd-node1.example.com", "etcd")
	f.Add("Default", "web", "app")
	f.Add("a.b", "web_1", "app.1")
	f.Add("", "", "")
	f.Add("ns", "../../etc", "x")
	f.Add("ns", strings.Repeat("a", 254), strings.Repeat("b", 64))
	f.Fuzz(func(t *testing.T, ns, pod, ctr string) {
		ref, err := parseRef(ns, pod, ctr)
		if err != nil {
			return
		}
		if len(validation.IsDNS1123Label(ref.Namespace)) > 0 ||
			len(validation.IsDNS1123Subdomain(ref.Pod)) > 0 ||
			len(validation.IsDNS1123Label(ref.Container)) > 0 {
			t.Fatalf("accepted invalid names %+v", ref)
		}
		if ref.Namespace != ns || ref.Pod != pod || ref.Container != ctr {
			t.Fatalf("ref %+v altered the input", ref)
		}
		if strings.ContainsAny(ns+pod+ctr, "/\x00") || strings.Contains(pod, "..") {
			t.Fatalf("accepted a path-like name %+v", ref)
		}
	})
}

func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"", "0", "5", "-1", "1.5", "abc", "+7", "9223372036", "9223372037", "99999999999999999999", " 1", "0x10"} {
		f.Add(s, "")
		f.Add("1", s)
	}
	f.Fuzz(func(t *testing.T, first, last string) {
		const def = time.Minute
		d, err := parseTimeout([]string{first, last}, def)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", last)) {
				t.Fatalf("error %q does not name the value %q", err, last)
			}
			return
		}
		if d <= 0 {
			t.Fatalf("timeout %v from %q", d, last)
		}
		if d != def && d%time.Second != 0 {
			t.Fatalf("timeout %v is not whole seconds", d)
		}
	})
}

// FuzzHandler sends arbitrary request lines to the full handler: it must
// never panic, never redirect, and never reach the Checkpointer (or answer
// 200 to a checkpoint) unless the names are valid and the method is POST.
func FuzzHandler(f *testing.F) {
	for _, s := range [][3]string{
		{"POST", "/checkpoint/default/web/app", "timeout=5"},
		{"POST", "/checkpoint/default/web/app", "timeout=5&timeout=-1"},
		{"POST", "/checkpoint/Default/web/app", ""},
		{"POST", "/checkpoint/default/we%2Fb/app", ""},
		{"POST", "/checkpoint/default//app", ""},
		{"POST", "/checkpoint/default/../web/app", ""},
		{"POST", "/checkpoint/default/web/app/", ""},
		{"POST", "/checkpoint/%64efault/web/app", ""},
		{"GET", "/checkpoint/default/web/app", ""},
		{"GET", "/healthz", ""},
		{"GET", "/metrics", ""},
		{"PUT", "/x", "a=%zz"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, method, path, query string) {
		target := path
		if query != "" {
			target += "?" + query
		}
		raw := method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // not a request a server would hand to a handler
		}
		req.RemoteAddr = "127.0.0.1:1"
		fc := &fakeCheckpointer{path: archive}
		h := New(Options{CheckpointEnabled: true}, fc, &passGuard{}, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if rec.Code >= 300 && rec.Code < 400 {
			t.Fatalf("%s %q redirected (%d)", method, target, rec.Code)
		}
		if fc.calls == 0 {
			if strings.HasPrefix(req.URL.Path, "/checkpoint/") && rec.Code == http.StatusOK {
				t.Fatalf("%s %q: 200 without a checkpoint", method, target)
			}
			return
		}
		if req.Method != http.MethodPost {
			t.Fatalf("%s %q reached the checkpointer", method, target)
		}
		if _, err := parseRef(fc.ref.Namespace, fc.ref.Pod, fc.ref.Container); err != nil {
			t.Fatalf("%q reached the checkpointer with invalid names: %v", target, err)
		}
		// One trailing slash is ignored, as by the kubelet.
		if want := "/checkpoint/" + fc.ref.String(); strings.TrimSuffix(req.URL.Path, "/") != want {
			t.Fatalf("path %q checkpointed %q", req.URL.Path, fc.ref)
		}
	})
}
