// Package plughost is the SDK for plughost plugins written in Go: the types of plughost's
// `plugin` world (wit/plugin.wit) and the same helpers the Rust, Python and JavaScript SDKs
// offer (text and JSON responses, header lookup, config parsing, logging).
//
// A plugin registers its two functions from an init function and is built with standard Go
// as a WASI reactor, then made a component (see README.md):
//
//	func init() { plughost.Register(setup, process) }
//	func main() {}
package plughost

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Header is one HTTP header. Request header names arrive lower-case.
type Header struct {
	Name  string
	Value string
}

// Request is the request as the plugin sees it.
type Request struct {
	// Method is `GET`, `POST`, ...
	Method string
	// URI is the path and query as the client sent them, e.g. `/hello?name=x`.
	URI string
	// Headers are the request headers in the order received.
	Headers []Header
	// Body is the whole request body (at most the server's `max_body_bytes`).
	Body []byte
	// Client is the client's address, `ip:port`.
	Client string
}

// Header returns the first value of header name (case-insensitive) and whether it was there.
func (r *Request) Header(name string) (string, bool) {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// Response is an answer the plugin gives itself. Status is 200 to 599; framing headers
// (`content-length`, `transfer-encoding`, ...) are plughost's and dropped.
type Response struct {
	Status  uint16
	Headers []Header
	Body    []byte
}

// Edits are the changes a filter asks for when it lets the request go on.
type Edits struct {
	// SetHeaders replace request headers of the same name before the next step.
	SetHeaders []Header
	// RemoveHeaders are request headers to remove.
	RemoveHeaders []string
	// ResponseHeaders are added to the response finally sent.
	ResponseHeaders []Header
}

// Action is what plughost does after a plugin's process function: go on (Next) or answer
// (Respond, Text, JSON).
type Action struct {
	respond *Response
	edits   Edits
}

// Next lets the request go on to the next filter, the cache and the route, with edits.
func Next(edits Edits) Action {
	return Action{edits: edits}
}

// Respond answers the request now; later filters, the cache and the route are skipped.
func Respond(status uint16, body []byte, headers ...Header) Action {
	return Action{respond: &Response{Status: status, Headers: lower(headers), Body: body}}
}

// Text answers with a `text/plain` body.
func Text(status uint16, body string, headers ...Header) Action {
	all := append([]Header{{"content-type", "text/plain; charset=utf-8"}}, headers...)
	return Respond(status, []byte(body), all...)
}

// JSON answers with value encoded as `application/json`.
func JSON(status uint16, value any, headers ...Header) (Action, error) {
	body, err := json.Marshal(value)
	if err != nil {
		return Action{}, err
	}
	all := append([]Header{{"content-type", "application/json"}}, headers...)
	return Respond(status, body, all...), nil
}

// Config decodes the plugin's config table (the JSON the init function gets) into into,
// which should be a pointer to a struct or a map; anything but a JSON object is an error
// that keeps the plugin from loading.
func Config(text string, into any) error {
	if !strings.HasPrefix(strings.TrimSpace(text), "{") {
		return errors.New("config is not a JSON object")
	}
	if err := json.Unmarshal([]byte(text), into); err != nil {
		return errors.New("config: " + err.Error())
	}
	return nil
}

// Level is the severity of a log line.
type Level uint8

// The levels of plughost's log, in the order of the WIT enum.
const (
	Trace Level = iota
	Debug
	Info
	Warn
	Error
)

// Log writes one line into plughost's log, tagged with the plugin's name. It never blocks:
// when the log buffer is full the line is dropped and counted.
func Log(level Level, message string) {
	hostLog(level, message)
}

// InitFunc is called once per instance before its first request, with the plugin's config as
// JSON (`{}` when there is none); an error keeps the plugin from loading.
type InitFunc func(config string) error

// ProcessFunc is called for every request the plugin sees; an error answers it with 500.
type ProcessFunc func(req *Request) (Action, error)

var (
	initFunc    InitFunc = func(string) error { return nil }
	processFunc ProcessFunc
)

// Register sets the plugin's functions; call it from an init function. init may be nil.
func Register(init InitFunc, process ProcessFunc) {
	if init != nil {
		initFunc = init
	}
	processFunc = process
}

func lower(headers []Header) []Header {
	out := make([]Header, len(headers))
	for i, h := range headers {
		out[i] = Header{strings.ToLower(h.Name), h.Value}
	}
	return out
}

// guard runs f, turning a panic into the call's error so that the instance answers 500 with
// the reason instead of trapping.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}
