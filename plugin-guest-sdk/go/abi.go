//go:build wasip1

package plughost

// The canonical ABI of plughost's world (wit/plugin.wit), written by hand because no bindings
// generator targets standard Go's `//go:wasmexport`: wit-bindgen-go and its `cm` package are
// made for TinyGo, which is not available here. The world is small and grows only by adding,
// and the layouts below are the component model's (CanonicalABI.md); the end-to-end tests run
// a Go plugin through the real host, which checks every offset.
//
// Go owns linear memory from the end of its data upward and grows it itself, so nothing else
// in the component may grow it: the WASI adapter gets its state from cabi_realloc_adapter
// (below), and the component is made without `--realloc-via-memory-grow`.

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// Between calls plughost lowers the next call's arguments through cabi_realloc, and the
// component model forbids calling an import there (wasmtime traps: "cannot leave component
// instance"). Go's allocator reads the clock, an import, when the heap grows or a collection
// starts, so cabi_realloc does not allocate: it hands out pieces of an arena made in advance.
// Its pages cost nothing until a request fills them (fresh memory is not zeroed).
var (
	// arena takes the arguments of the next call. Each call copies out what it keeps, and the
	// next call's arguments start again at its beginning.
	arena = make([]byte, defaultReserve)
	// used is how much of the arena the pending arguments take.
	used uint32
	// overflow holds, by address, arguments that did not fit in the arena. Allocating them
	// works only while the heap has room (see above); otherwise the call traps.
	overflow = map[uint32][]byte{}
	// results keeps what a call returned alive until the host has copied it (post-return, or
	// the next call at the latest).
	results []any
)

// defaultReserve fits plughost's default max_body_bytes (16 MiB) and a request's head.
const defaultReserve = 16<<20 + 256<<10

// ReserveRequestBytes sizes the memory kept for a request (its body, headers and strings)
// for a server whose max_body_bytes is not the default of 16 MiB; call it from an init
// function. A larger request still works while Go's heap has room, and traps otherwise.
func ReserveRequestBytes(n int) {
	arena = make([]byte, n)
}

// nextCall readies the arena for the next call's arguments once this call has copied its own.
func nextCall() {
	used = 0
	clear(overflow)
	results = nil
}

//go:wasmexport cabi_realloc
func cabiRealloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	if newSize == 0 {
		return align
	}
	start := (used + align - 1) &^ (align - 1)
	var region []byte
	if start+newSize <= uint32(len(arena)) {
		region = arena[start : start+newSize]
		used = start + newSize
	} else {
		buf := make([]byte, newSize+align-1)
		pad := (align - address(buf)%align) % align
		region = buf[pad : pad+newSize]
		overflow[address(region)] = region
	}
	if oldPtr != 0 {
		copy(region, argument(oldPtr, oldSize))
	}
	return address(region)
}

//go:wasmimport plughost:plugin/host@0.1.0 log
func wasmLog(level uint32, ptr unsafe.Pointer, n uint32)

func hostLog(level Level, message string) {
	wasmLog(uint32(level), unsafe.Pointer(unsafe.StringData(message)), uint32(len(message)))
}

// plugin-init: func(config: string) -> result<_, string>, its result in a 12-byte area.
//
//go:wasmexport plugin-init
func pluginInit(configPtr, configLen uint32) uint32 {
	config := string(argument(configPtr, configLen))
	nextCall()
	err := guard(func() error { return initFunc(config) })
	area := make([]byte, 12)
	if err != nil {
		area[0] = 1
		putString(area[4:], err.Error())
	}
	return keep(area)
}

// plugin-process: func(req: request) -> result<action, string>. The request record arrives
// flattened (five strings and lists, each a pointer and a length); the result is a 32-byte
// area: the result's case at 0, then at 4 the error string or the action (its case at 4, its
// payload at 8: edits as three lists, or a response as status, headers and body).
//
//go:wasmexport plugin-process
func pluginProcess(methodPtr, methodLen, uriPtr, uriLen, headersPtr, headersLen, bodyPtr, bodyLen, clientPtr, clientLen uint32) uint32 {
	req := &Request{
		Method:  string(argument(methodPtr, methodLen)),
		URI:     string(argument(uriPtr, uriLen)),
		Headers: liftHeaders(headersPtr, headersLen),
		Body:    append([]byte(nil), argument(bodyPtr, bodyLen)...),
		Client:  string(argument(clientPtr, clientLen)),
	}
	nextCall()
	var action Action
	err := guard(func() error {
		if processFunc == nil {
			return fmt.Errorf("no process function: call plughost.Register from an init function")
		}
		var err error
		action, err = processFunc(req)
		return err
	})
	area := make([]byte, 32)
	switch {
	case err != nil:
		area[0] = 1
		putString(area[4:], err.Error())
	case action.respond != nil:
		area[4] = 1
		r := action.respond
		binary.LittleEndian.PutUint16(area[8:], r.Status)
		putHeaders(area[12:], r.Headers)
		putList(area[20:], r.Body, len(r.Body))
	default:
		e := action.edits
		putHeaders(area[8:], e.SetHeaders)
		putStrings(area[16:], e.RemoveHeaders)
		putHeaders(area[24:], e.ResponseHeaders)
	}
	return keep(area)
}

//go:wasmexport cabi_post_plugin-init
func postInit(uint32) { results = nil }

//go:wasmexport cabi_post_plugin-process
func postProcess(uint32) { results = nil }

// argument is n bytes at ptr, which cabi_realloc handed out for the pending call.
func argument(ptr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	if base := address(arena); ptr >= base && ptr-base+n <= used {
		return arena[ptr-base : ptr-base+n]
	}
	if buf, ok := overflow[ptr]; ok && uint32(len(buf)) >= n {
		return buf[:n]
	}
	panic("plughost: the host passed memory it did not allocate")
}

// liftHeaders reads list<header>: 16 bytes per header, name and value as pointer and length.
func liftHeaders(ptr, n uint32) []Header {
	raw := argument(ptr, n*16)
	headers := make([]Header, n)
	for i := range headers {
		at := raw[i*16:]
		u := binary.LittleEndian.Uint32
		headers[i] = Header{
			Name:  string(argument(u(at[0:]), u(at[4:]))),
			Value: string(argument(u(at[8:]), u(at[12:]))),
		}
	}
	return headers
}

func address(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

// keep holds a call's return area until the host has read it, and gives its address.
func keep(area []byte) uint32 {
	results = append(results, area)
	return address(area)
}

func putPair(at []byte, ptr, n uint32) {
	binary.LittleEndian.PutUint32(at[0:], ptr)
	binary.LittleEndian.PutUint32(at[4:], n)
}

// putList writes a list's pointer and its length in elements (bytes for list<u8>).
func putList(at []byte, list []byte, elements int) {
	results = append(results, list)
	putPair(at, address(list), uint32(elements))
}

func putString(at []byte, s string) {
	results = append(results, s)
	putPair(at, uint32(uintptr(unsafe.Pointer(unsafe.StringData(s)))), uint32(len(s)))
}

func putHeaders(at []byte, headers []Header) {
	list := make([]byte, 16*len(headers))
	for i, h := range headers {
		putString(list[i*16:], h.Name)
		putString(list[i*16+8:], h.Value)
	}
	putList(at, list, len(headers))
}

func putStrings(at []byte, strings []string) {
	list := make([]byte, 8*len(strings))
	for i, s := range strings {
		putString(list[i*8:], s)
	}
	putList(at, list, len(strings))
}

// adapterMemory is where the WASI preview1 adapter keeps its state. The adapter allocates it
// on its first call, from inside Go's own runtime start-up, so it cannot use Go's allocator;
// and it must not grow linear memory itself (`--realloc-via-memory-grow`), because Go's heap
// takes every page past its own end as its own and would reuse the adapter's.
var (
	adapterMemory [128 << 10]byte
	adapterUsed   uintptr
)

// cabi_realloc_adapter hands out pieces of adapterMemory; it never frees (the adapter
// allocates its state once). nosplit: it runs nested in an import call, on whatever stack
// the runtime is on, and must not grow it.
//
//go:wasmexport cabi_realloc_adapter
//go:nosplit
func cabiReallocAdapter(oldPtr, oldSize, align, newSize uint32) uint32 {
	start := (adapterUsed + uintptr(align) - 1) &^ (uintptr(align) - 1)
	if start+uintptr(newSize) > uintptr(len(adapterMemory)) {
		return 0
	}
	adapterUsed = start + uintptr(newSize)
	return uint32(uintptr(unsafe.Pointer(&adapterMemory[start])))
}
