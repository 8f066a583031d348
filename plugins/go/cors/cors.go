// cors: a plughost filter written in Go. It answers CORS preflight requests (OPTIONS with
// Access-Control-Request-Method) from the origins in its config with 204, and marks the
// responses to their other requests with Access-Control-Allow-Origin; requests from other
// origins go on unmarked, so the browser refuses them.
// Config: { origins = ["https://app.example.com"], max_age = 600 }
package main

import (
	"errors"
	"strconv"
	"strings"

	plughost "github.com/plughost/plughost/plugin-guest-sdk/go"
)

var (
	origins = map[string]bool{}
	maxAge  = "600"
)

func init() { plughost.Register(setup, process) }

// main is never called: the plugin is a WASI reactor, whose exports plughost calls.
func main() {}

func setup(config string) error {
	var c struct {
		Origins []string `json:"origins"`
		MaxAge  *int     `json:"max_age"`
	}
	if err := plughost.Config(config, &c); err != nil {
		return err
	}
	if len(c.Origins) == 0 {
		return errors.New(`config needs "origins", a list like ["https://app.example.com"]`)
	}
	for _, o := range c.Origins {
		origins[strings.ToLower(o)] = true
	}
	if c.MaxAge != nil {
		maxAge = strconv.Itoa(*c.MaxAge)
	}
	plughost.Log(plughost.Info, "cors (go) ready: "+strconv.Itoa(len(origins))+" origins")
	return nil
}

func process(req *plughost.Request) (plughost.Action, error) {
	origin, ok := req.Header("origin")
	if !ok || !origins[strings.ToLower(origin)] {
		return plughost.Next(plughost.Edits{}), nil
	}
	allow := []plughost.Header{
		{Name: "access-control-allow-origin", Value: origin},
		{Name: "vary", Value: "origin"},
	}
	method, preflight := req.Header("access-control-request-method")
	if req.Method == "OPTIONS" && preflight {
		headers := append(allow,
			plughost.Header{Name: "access-control-allow-methods", Value: method},
			plughost.Header{Name: "access-control-max-age", Value: maxAge},
		)
		if asked, ok := req.Header("access-control-request-headers"); ok {
			headers = append(headers, plughost.Header{Name: "access-control-allow-headers", Value: asked})
		}
		return plughost.Respond(204, nil, headers...), nil
	}
	return plughost.Next(plughost.Edits{ResponseHeaders: allow}), nil
}
