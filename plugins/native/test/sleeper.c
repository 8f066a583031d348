/* Sleeps a second per request: requests must not wait for it. */
#include <unistd.h>

void plugin_init(void* context) { }
void plugin_process(const char* data, void* context) { sleep(1); }
