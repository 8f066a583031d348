"""{{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
header (400) and lets the others through, marking their response with `x-{{name}}`."""

import wit_world
from wit_world.imports import types

import plughost_sdk as sdk


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        """Once per instance, with the plugin's config as JSON; raising Err keeps it from loading."""
        sdk.log("info", "{{name}} ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        """Every request, in filter-chain order."""
        if sdk.header(req, "host") is None:
            return sdk.text(400, "a host header is required\n")
        return sdk.next(response_headers={"x-{{name}}": "seen"})
