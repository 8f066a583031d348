/*
 * counter: counts requests with a plain (non-atomic) counter -- plughost never calls one plugin
 * from two threads at once -- and logs every Nth through plughost's log callback.
 * Config (plughost.toml): config = { every = 100 }   (default 1000)
 *
 * Linux:   gcc -shared -fPIC -O2 counter.c -o counter.so
 * Windows: gcc -shared -O2 counter.c -o counter.dll
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plughost_plugin.h"

#ifdef _WIN32
#define EXPORT __declspec(dllexport)
#else
#define EXPORT
#endif

static unsigned long count;
static unsigned long every = 1000;

static void say(plughost_context *ctx, int level, const char *text) {
    if (ctx && ctx->abi_version >= 1 && ctx->log) ctx->log(ctx, level, text);
}

EXPORT void plugin_init(void *context) {
    plughost_context *ctx = context;
    const char *at = ctx && ctx->config ? strstr(ctx->config, "\"every\":") : NULL;
    if (at) {
        long n = strtol(at + strlen("\"every\":"), NULL, 10);
        if (n > 0) every = (unsigned long)n;
    }
    char line[96];
    snprintf(line, sizeof line, "counter ready, logging every %lu requests", every);
    say(ctx, PLUGHOST_LOG_INFO, line);
}

EXPORT void plugin_process(const char *data, void *context) {
    (void)data;
    count++;
    if (count % every == 0) {
        char line[64];
        snprintf(line, sizeof line, "requests so far: %lu", count);
        say(context, PLUGHOST_LOG_INFO, line);
    }
}

EXPORT void plugin_shutdown(void *context) {
    char line[64];
    snprintf(line, sizeof line, "total requests: %lu", count);
    say(context, PLUGHOST_LOG_INFO, line);
}
