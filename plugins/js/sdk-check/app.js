// sdk-check: a filter calling every helper of plughost's JavaScript SDK
// (plugin-guest-sdk/js), for the SDK's test in tests/tests/sdk.rs. Config: { tag = "..." }
import * as sdk from '../../../plugin-guest-sdk/js/index.js';

let settings = {};

export function pluginInit(json) {
  settings = sdk.config(json);
  sdk.log('info', `sdk-check (js) ready: ${settings.tag ?? '-'}`);
}

export function pluginProcess(req) {
  const path = req.uri.split('?')[0];
  if (path === '/sdk/text') {
    return sdk.text(201, 'plain\n', { 'X-Extra': '1' });
  }
  if (path === '/sdk/json') {
    return sdk.json(200, { tag: settings.tag ?? null, probe: sdk.header(req, 'X-Probe') ?? null });
  }
  if (path === '/sdk/respond') {
    return sdk.respond(418, new Uint8Array([0, 1]), { 'Content-Type': 'application/octet-stream' });
  }
  return sdk.next({
    setHeaders: { 'X-Set': 'yes' },
    removeHeaders: ['X-Drop'],
    responseHeaders: { 'X-Seen': 'sdk-check' },
  });
}
