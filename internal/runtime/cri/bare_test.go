package cri

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// bareCRI implements nothing: every call answers Unimplemented.
type bareCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func serveBare(t *testing.T, f *bareCRI, sock string) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
}
