// rewrite: a plughost filter written in JavaScript. It moves the value of one request header
// to another name (e.g. a legacy `x-user` to `x-forwarded-user`) and marks the response.
// Config: { from = "x-user", to = "x-forwarded-user" }
import { log } from 'plughost:plugin/host@0.1.0';

let from = '';
let to = '';

const untouched = () => ({
  tag: 'continue',
  val: { setHeaders: [], removeHeaders: [], responseHeaders: [] },
});

export function pluginInit(json) {
  const config = JSON.parse(json);
  if (!config.from || !config.to) {
    throw 'config needs "from" and "to" header names';
  }
  from = config.from.toLowerCase();
  to = config.to.toLowerCase();
  log('info', `rewrite (js) ready: ${from} -> ${to}`);
}

export function pluginProcess(req) {
  const found = req.headers.find((h) => h.name === from);
  if (!found) {
    return untouched();
  }
  return {
    tag: 'continue',
    val: {
      setHeaders: [{ name: to, value: found.value }],
      removeHeaders: [from],
      responseHeaders: [{ name: 'x-rewritten-by', value: 'rewrite (js)' }],
    },
  };
}
