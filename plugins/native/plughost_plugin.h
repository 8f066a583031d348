/*
 * plughost native plugin ABI.
 *
 * A native plugin is a shared library exporting
 *
 *     void plugin_init(void *context);
 *     void plugin_process(const char *data, void *context);
 *     void plugin_shutdown(void *context);   (optional)
 *
 * exactly as plugins of the C server plughost replaces did; those load unchanged. `context`
 * points to a `plughost_context` (below), valid from plugin_init until plugin_shutdown returns.
 *
 * `data` is the request as text: request line, headers, a blank line, then the body, capped at
 * the server's `native_body_cap` bytes (default 64 KiB) and cut at its first NUL byte;
 * NUL-terminated. It is valid only during the call.
 *
 * Calls into one plugin never overlap (plughost calls it from one thread of its own), so a
 * plugin needs no locking. Plugins observe requests; they cannot change the response.
 *
 * A native plugin runs with the server's full rights and can crash it. Use a WebAssembly
 * plugin for code you do not trust.
 *
 * Build: gcc -shared -fPIC my_plugin.c -o my_plugin.so            (Linux)
 *        gcc -shared my_plugin.c -o my_plugin.dll                 (Windows, __declspec(dllexport))
 */
#ifndef PLUGHOST_PLUGIN_H
#define PLUGHOST_PLUGIN_H

#include <stdint.h>

#define PLUGHOST_ABI_VERSION 1

enum plughost_log_level {
    PLUGHOST_LOG_TRACE = 0,
    PLUGHOST_LOG_DEBUG = 1,
    PLUGHOST_LOG_INFO = 2,
    PLUGHOST_LOG_WARN = 3,
    PLUGHOST_LOG_ERROR = 4,
};

typedef struct plughost_context {
    /* PLUGHOST_ABI_VERSION of the host that loaded the plugin. */
    uint32_t abi_version;
    /* The plugin's name (its file name without extension), NUL-terminated. */
    const char *name;
    /* The plugin's `config` table from plughost.toml as JSON ("{}" when none), NUL-terminated. */
    const char *config;
    /* Writes one line into plughost's async log, tagged with the plugin's name. Never blocks. */
    void (*log)(const struct plughost_context *context, int32_t level, const char *message);
} plughost_context;

#endif
