// {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
// header (400) and lets the others through, marking their response with `x-{{name}}`.
package main

import plughost "github.com/plughost/plughost/plugin-guest-sdk/go"

func init() { plughost.Register(setup, process) }

// main is never called: the plugin is a WASI reactor, whose exports plughost calls.
func main() {}

// setup runs once per instance, with the plugin's config as JSON; an error keeps it from loading.
func setup(config string) error {
	plughost.Log(plughost.Info, "{{name}} ready")
	return nil
}

// process runs for every request, in filter-chain order.
func process(req *plughost.Request) (plughost.Action, error) {
	if _, ok := req.Header("host"); !ok {
		return plughost.Text(400, "a host header is required\n"), nil
	}
	return plughost.Next(plughost.Edits{
		ResponseHeaders: []plughost.Header{{Name: "x-{{name}}", Value: "seen"}},
	}), nil
}
