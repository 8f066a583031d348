"""{{name}}: a plughost responder. It answers every request on its route with a greeting; its
`config` table (in plughost.toml) may set `greeting`."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

greeting = "Hello"


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        """Once per instance, with the plugin's config as JSON; raising Err keeps it from loading."""
        global greeting
        try:
            greeting = json.loads(config).get("greeting", greeting)
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        host.log(host.Level.INFO, "{{name}} ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        """Every request on the plugin's routes."""
        body = f"{greeting} from {{name}}! You asked for {req.uri}\n".encode()
        headers = [types.Header("content-type", "text/plain; charset=utf-8")]
        return types.Action_Respond(types.Response(200, headers, body))
