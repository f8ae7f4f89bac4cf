package client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Errors a call returns for the server's status codes; test with errors.Is.
// The *StatusError that wraps one carries the server's own message.
var (
	ErrBadRequest       = errors.New("bad request")         // 400
	ErrUnauthorized     = errors.New("unauthorized")        // 401
	ErrForbidden        = errors.New("forbidden")           // 403
	ErrNotFound         = errors.New("not found")           // 404
	ErrMethodNotAllowed = errors.New("method not allowed")  // 405
	ErrConflict         = errors.New("conflict")            // 409
	ErrTooLarge         = errors.New("request too large")   // 413
	ErrServer           = errors.New("server error")        // 500 and other 5xx
	ErrNotImplemented   = errors.New("not implemented")     // 501
	ErrUnavailable      = errors.New("service unavailable") // 503
	ErrUnexpected       = errors.New("unexpected answer")   // any other status
)

// StatusError is a non-success answer of the server.
type StatusError struct {
	Op      string // what the client asked, e.g. "checkpoint default/web/app"
	Status  int    // HTTP status code
	Message string // the server's plain-text message (bounded, valid UTF-8)
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s: server answered %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), msg)
}

// Unwrap returns the sentinel error for the status.
func (e *StatusError) Unwrap() error { return sentinel(e.Status) }

func sentinel(status int) error {
	switch status {
	case http.StatusBadRequest:
		return ErrBadRequest
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusMethodNotAllowed:
		return ErrMethodNotAllowed
	case http.StatusConflict:
		return ErrConflict
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusNotImplemented:
		return ErrNotImplemented
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	if status >= 500 {
		return ErrServer
	}
	return ErrUnexpected
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// statusError reads a non-success answer into a *StatusError.
func statusError(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return &StatusError{Op: op, Status: resp.StatusCode, Message: strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))}
}
