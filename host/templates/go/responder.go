// {{name}}: a plughost responder. It answers every request on its route with a greeting; its
// `config` table (in plughost.toml) may set `greeting`.
package main

import plughost "github.com/plughost/plughost/plugin-guest-sdk/go"

var greeting = "Hello"

func init() { plughost.Register(setup, process) }

// main is never called: the plugin is a WASI reactor, whose exports plughost calls.
func main() {}

// setup runs once per instance, with the plugin's config as JSON; an error keeps it from loading.
func setup(config string) error {
	var c struct {
		Greeting string `json:"greeting"`
	}
	if err := plughost.Config(config, &c); err != nil {
		return err
	}
	if c.Greeting != "" {
		greeting = c.Greeting
	}
	plughost.Log(plughost.Info, "{{name}} ready")
	return nil
}

// process runs for every request on the plugin's routes.
func process(req *plughost.Request) (plughost.Action, error) {
	return plughost.Text(200, greeting+" from {{name}}! You asked for "+req.URI+"\n"), nil
}
