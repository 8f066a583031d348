"""{{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
header (400) and lets the others through, marking their response with `x-{{name}}`."""

import wit_world
from wit_world.imports import host, types


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        """Once per instance, with the plugin's config as JSON; raising Err keeps it from loading."""
        host.log(host.Level.INFO, "{{name}} ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        """Every request, in filter-chain order."""
        if not any(h.name == "host" for h in req.headers):
            return types.Action_Respond(
                types.Response(400, [], b"a host header is required\n")
            )
        marked = [types.Header("x-{{name}}", "seen")]
        return types.Action_Continue(types.Edits([], [], marked))
