// echo: a plughost responder written in Go. It answers with the request it received as JSON:
// method, URI, headers, body length and client, and the body itself when it is text. A
// request with `?panic` panics, to show that a plugin's panic becomes a 500 with its reason.
// Config: { name = "echo" } (the name it reports; optional)
package main

import (
	"strings"
	"unicode/utf8"

	plughost "github.com/plughost/plughost/plugin-guest-sdk/go"
)

var name = "echo (go)"

func init() { plughost.Register(setup, process) }

// main is never called: the plugin is a WASI reactor, whose exports plughost calls.
func main() {}

func setup(config string) error {
	var c struct {
		Name string `json:"name"`
	}
	if err := plughost.Config(config, &c); err != nil {
		return err
	}
	if c.Name != "" {
		name = c.Name
	}
	plughost.Log(plughost.Info, name+" ready")
	return nil
}

type echoed struct {
	Plugin    string            `json:"plugin"`
	Method    string            `json:"method"`
	URI       string            `json:"uri"`
	Headers   map[string]string `json:"headers"`
	BodyBytes int               `json:"body_bytes"`
	Body      string            `json:"body,omitempty"`
	Client    string            `json:"client"`
}

func process(req *plughost.Request) (plughost.Action, error) {
	if strings.HasSuffix(req.URI, "?panic") {
		var none []string
		_ = none[len(req.URI)]
	}
	out := echoed{
		Plugin:    name,
		Method:    req.Method,
		URI:       req.URI,
		Headers:   map[string]string{},
		BodyBytes: len(req.Body),
		Client:    req.Client,
	}
	for _, h := range req.Headers {
		out.Headers[h.Name] = h.Value
	}
	if utf8.Valid(req.Body) {
		out.Body = string(req.Body)
	}
	return plughost.JSON(200, out, plughost.Header{Name: "X-Echoed-By", Value: name})
}
