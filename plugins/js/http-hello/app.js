// A standard wasi:http/proxy component in JavaScript, built with ComponentizeJS
// (`componentize-js app.js --wit WIT --world-name proxy`): plughost runs it unchanged with
// `kind = "wasi-http"`. It answers with the method and path it was asked for.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method().tag.toUpperCase();
    const path = request.pathWithQuery() ?? "/";
    const headers = Fields.fromList([
      ["content-type", new TextEncoder().encode("text/plain; charset=utf-8")],
    ]);
    const response = new OutgoingResponse(headers);
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(
      new TextEncoder().encode(`Hello from JavaScript! ${method} ${path}\n`),
    );
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
