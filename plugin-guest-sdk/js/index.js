// Helpers for plughost plugins written in JavaScript and built with ComponentizeJS against
// plughost's `plugin` world: the same helpers as the Rust and Python SDKs.
import { log as hostLog } from 'plughost:plugin/host@0.1.0';

const encoder = new TextEncoder();

const headerList = (pairs) =>
  Object.entries(pairs ?? {}).map(([name, value]) => ({ name: name.toLowerCase(), value }));

/** The plugin's config table (the JSON pluginInit gets) as an object; throws on anything else. */
export function config(json) {
  const value = JSON.parse(json);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw 'config is not a JSON object';
  }
  return value;
}

/** The first value of header `name` (case-insensitive), or undefined. */
export function header(req, name) {
  const wanted = name.toLowerCase();
  return req.headers.find((h) => h.name.toLowerCase() === wanted)?.value;
}

/** A line in plughost's log, tagged with the plugin's name ('trace' … 'error'). */
export function log(level, message) {
  hostLog(level, message);
}

/** Answers the request itself. */
export function respond(status, body, headers) {
  const bytes = typeof body === 'string' ? encoder.encode(body) : body;
  return { tag: 'respond', val: { status, headers: headerList(headers), body: bytes } };
}

/** A text/plain answer. */
export function text(status, body, headers) {
  return respond(status, body, { 'content-type': 'text/plain; charset=utf-8', ...headers });
}

/** An application/json answer. */
export function json(status, value, headers) {
  return respond(status, JSON.stringify(value), { 'content-type': 'application/json', ...headers });
}

/** Lets the request go on, with header edits. */
export function next({ setHeaders, removeHeaders, responseHeaders } = {}) {
  return {
    tag: 'continue',
    val: {
      setHeaders: headerList(setHeaders),
      removeHeaders: (removeHeaders ?? []).map((n) => n.toLowerCase()),
      responseHeaders: headerList(responseHeaders),
    },
  };
}
