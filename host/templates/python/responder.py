"""{{name}}: a plughost responder. It answers every request on its route with a greeting; its
`config` table (in plughost.toml) may set `greeting`."""

import wit_world
from wit_world.imports import types

import plughost_sdk as sdk

greeting = "Hello"


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        """Once per instance, with the plugin's config as JSON; raising Err keeps it from loading."""
        global greeting
        greeting = sdk.config(config).get("greeting", greeting)
        sdk.log("info", "{{name}} ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        """Every request on the plugin's routes."""
        return sdk.text(200, f"{greeting} from {{name}}! You asked for {req.uri}\n")
