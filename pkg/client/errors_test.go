package client

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStatusErrorBounded(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.WriteHeader(500)
	rec.Body.WriteString(strings.Repeat("x", maxErrorBody*2) + "\xff")
	err := statusError("op", rec.Result())
	if len(err.Error()) > maxErrorBody+100 {
		t.Errorf("error message of %d bytes", len(err.Error()))
	}
}
