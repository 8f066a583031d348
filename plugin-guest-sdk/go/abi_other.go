//go:build !wasip1

package plughost

import (
	"fmt"
	"os"
)

// Outside WebAssembly (`go test` of a plugin's own logic), log lines go to standard error.
func hostLog(level Level, message string) {
	fmt.Fprintf(os.Stderr, "[%d] %s\n", level, message)
}
