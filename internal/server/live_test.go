package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// fakeLive is a checkpointer that can migrate live; its dump fails with err.
type fakeLive struct {
	fakeCheckpointer
	liveErr error
	calls   int
}

func (f *fakeLive) CheckpointLive(context.Context, runtime.Ref, runtime.CheckpointOptions) (*checkpoint.LiveSource, error) {
	f.calls++
	return nil, f.liveErr
}

// The live routes' answers before the connection switches protocols.
func TestLiveRequests(t *testing.T) {
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {api.LiveProtocol}}
	for _, tc := range []struct {
		name     string
		live     bool // the checkpointer can migrate live
		target   string
		header   http.Header
		status   int
		body     string
		dumpCall bool
	}{
		{"not a live backend", false, "/checkpoint/default/web/app?live=true", upgrade, 400, "this agent cannot migrate live", false},
		{"no upgrade", true, "/checkpoint/default/web/app?live=true", nil, 400, "live=true needs Connection: Upgrade", false},
		{"bad live", true, "/checkpoint/default/web/app?live=maybe", upgrade, 400, `invalid live "maybe"`, false},
		{"bad link timeout", true, "/checkpoint/default/web/app?live=true&linkTimeout=0", upgrade, 400, `invalid linkTimeout "0"`, false},
		{"dump fails: the checkpoint route's answer", true, "/checkpoint/default/web/app?live=true&linkTimeout=2.5", upgrade, 404, "container app does not exist", true},
		{"restore on a backend without live restore", true, "/restore/default/web/app?live=true", upgrade, 400, "this agent cannot migrate live", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Checkpointer = &fakeCheckpointer{}
			fl := &fakeLive{liveErr: wrapped(runtime.ErrContainerNotFound)}
			if tc.live {
				c = fl
			}
			h := NewWithArchives(Options{CheckpointEnabled: true}, c, &fakeArchives{}, &passGuard{}, nil)
			req := httptest.NewRequest(http.MethodPost, tc.target, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("%d %q, want %d with %q", rec.Code, rec.Body.String(), tc.status, tc.body)
			}
			if got := fl.calls > 0; got != tc.dumpCall {
				t.Fatalf("dumped: %v, want %v", got, tc.dumpCall)
			}
		})
	}
}
