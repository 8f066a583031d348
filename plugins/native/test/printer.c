/* A C-server-era plugin: ignores context and prints every request it is given. */
#include <stdio.h>

void plugin_init(void* context) { }
void plugin_process(const char* data, void* context) { printf("%s\n----\n", data); }
