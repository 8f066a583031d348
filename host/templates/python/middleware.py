"""{{name}}: a WASI 0.3 `wasi:http/middleware` component, built by componentize-py against the
middleware world of wit/:

    componentize-py -d wit -w plughost:wasi-http/middleware componentize app -o {{name}}.wasm

It passes every request on through its imported `handler` (in plughost, the rest of the
chain) and marks the response with `x-{{name}}: 1`; the body streams through.
"""

import wit_world
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import handler
from wit_world.imports.wasi_http_types import Request, Response


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        inner = await handler.handle(request)
        # A response's headers are immutable: copy them and change the copy.
        headers = inner.get_headers().clone()
        headers.set("x-{{name}}", [b"1"])
        status = inner.get_status_code()
        _, done = wit_world.result_unit_wasi_http_types_error_code_future(lambda: Ok(None))
        body, trailers = Response.consume_body(inner, done)
        response, _ = Response.new(headers, body, trailers)
        response.set_status_code(status)
        return response
