// Types of plughost-sdk (index.js): the request a plugin gets and the action it returns.
export interface Header { name: string; value: string }
export interface Request { method: string; uri: string; headers: Header[]; body: Uint8Array; client: string }
export type Action =
  | { tag: 'respond'; val: { status: number; headers: Header[]; body: Uint8Array } }
  | { tag: 'continue'; val: { setHeaders: Header[]; removeHeaders: string[]; responseHeaders: Header[] } };
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

export function config(json: string): Record<string, unknown>;
export function header(req: Request, name: string): string | undefined;
export function log(level: Level, message: string): void;
export function respond(status: number, body: string | Uint8Array, headers?: Record<string, string>): Action;
export function text(status: number, body: string, headers?: Record<string, string>): Action;
export function json(status: number, value: unknown, headers?: Record<string, string>): Action;
export function next(edits?: {
  setHeaders?: Record<string, string>;
  removeHeaders?: string[];
  responseHeaders?: Record<string, string>;
}): Action;
