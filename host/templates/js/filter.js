// {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
// header (400) and lets the others through, marking their response with `x-{{name}}`.
import * as sdk from './plughost-sdk/index.js';

// Once per instance, with the plugin's config as JSON; throwing keeps it from loading.
export function pluginInit(json) {
  sdk.log('info', '{{name}} ready');
}

// Every request, in filter-chain order.
export function pluginProcess(req) {
  if (sdk.header(req, 'host') === undefined) {
    return sdk.text(400, 'a host header is required\n');
  }
  return sdk.next({ responseHeaders: { 'x-{{name}}': 'seen' } });
}
